"""``configure root`` as a function (the CLI and the web console call it): change
config.toml's ``[root]`` and where the root key lives, checked before anything is
written, so a failed run changes nothing.

What a run can do, alone or together:

* a new root: a ``profile``, or a static key (``new_key``) put in a store;
* a move: the current static key goes to another store (file <-> keyring, or
  another keyring item) without being typed again; the old place is emptied (the
  file removed, the keyring item deleted) only after config.toml names the new one;
* settings (region, endpoints, MFA, rotation): a value sets, ``""`` clears, None
  leaves alone. No key is needed for these.

Order of writes: the new key's place, then config.toml (atomically, comments
kept), then the old place is emptied. A failure before config.toml is written
removes the new copy again; the configuration never names a key that is not there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomlkit
import tomlkit.exceptions

from dyncreds import config, paths
from dyncreds.aws.rootkeys import (
    StaticKeys,
    delete_keyring,
    read_credentials_file,
    read_keyring,
    write_credentials_file,
    write_keyring,
)
from dyncreds.client import EXIT_USAGE, CliError
from dyncreds.config.problems import read_text
from dyncreds.files import atomic_write
from dyncreds.protocol import DyncredsError

Store = Literal["file", "keyring"]
STORES = ("profile", "credentials_file", "keyring", "systemd_credential")
SETTINGS = (
    "region",
    "iam_endpoint",
    "sts_endpoint",
    "mfa_serial",
    "mfa_process",
    "unlock_for",
    "rotate_every",
)
DEFAULT_FILE = "root-credentials.toml"

STARTER_CONFIG = """\
# dyncreds configuration. Every key is optional; these are the defaults.
# Durations: "90s", "15m", "1h", "1h30m", or integer seconds.

[agent]
# log_level = "info"          # debug | info | warning | error
# min_remaining = "20m"       # a served credential has at least this long to live
# idle_after = "1h"           # stop refreshing a role nobody asked for in this long
# aws_concurrency = 8         # AWS calls in flight at once
# propagation_checks = 3      # a new IAM key must work this many times in a row
# propagation_timeout = "60s"

[root]
# The agent's own AWS identity (Vault: config/root). One of:
# profile = "dyncreds-root"                    # a profile of ~/.aws/config
# credentials_file = "root-credentials.toml"   # written by `dyncreds configure root`
# keyring = "root"                             # the OS keyring (`configure root --store keyring`)
# none: boto3's default credential chain
region = "us-east-1"
# iam_endpoint = "https://iam.amazonaws.com"
# sts_endpoint = "https://sts.us-east-1.amazonaws.com"
# max_retries = 5
# username_template = "dyncreds-{user}-{role}-{unix_time}-{random}"
# mfa_serial = "arn:aws:iam::123456789012:mfa/me"          # the agent starts locked
# mfa_process = "ykman oath accounts code --single aws"    # prints the code for `unlock`

[lease]
# Defaults for iam_user roles (Vault: config/lease).
# ttl = "1h"
# max_ttl = "12h"
"""


class ConfigureError(CliError):
    """A refused change: one line, nothing written (exit status 2 in the CLI)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


@dataclass
class RootChange:
    profile: str | None = None  # the root becomes this ~/.aws/config profile
    new_key: StaticKeys | None = None  # a new static key
    store: Store | None = None  # where the static key goes (None: where it is, else a file)
    keyring_item: str = "root"
    # Each setting: a value sets it, "" removes it, None leaves it alone.
    settings: dict[str, str | None] = field(default_factory=dict)
    check: bool = True  # sts:GetCallerIdentity before writing


@dataclass(frozen=True)
class Place:
    """Where a static key is: ("file", name in the config dir) or ("keyring", item)."""

    store: Store
    name: str


def load_document(path: Path, starter: str = STARTER_CONFIG) -> tomlkit.TOMLDocument:
    """config.toml as an editable document that keeps its comments and layout
    (``starter`` when there is none yet)."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        text = starter
    except (OSError, ValueError) as exc:
        raise ConfigureError(f"{path}: cannot read: {exc}") from None
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigureError(f"{path}: invalid TOML: {exc}; fix it first") from None


def current_place(root: Any) -> Place | None:
    if root.get("credentials_file"):
        return Place("file", str(root["credentials_file"]))
    if root.get("keyring"):
        return Place("keyring", str(root["keyring"]))
    return None


def wants_key(change: RootChange, root: Any) -> bool:
    """Does this run need a new key typed (or piped)? Only for a first static root:
    never to change a setting or to move the key that is already there."""
    if change.profile or change.new_key:
        return False
    if any(value is not None for value in change.settings.values()):
        return False
    return current_place(root) is None and not root.get("systemd_credential")


def configure_root(
    p: paths.Paths,
    change: RootChange,
    say: Callable[[str], None],
    starter: str = STARTER_CONFIG,
) -> None:
    """Apply ``change``; ``say`` is told each thing done, in words (never a secret)."""
    if change.profile and change.new_key:
        raise ConfigureError("a profile and an access key exclude each other; give one")
    doc = load_document(p.config_file, starter)
    root = doc.get("root")
    if root is None:
        root = tomlkit.table()
        doc["root"] = root
    old = current_place(root)
    new, keys = _plan_key(p, change, root, old)
    _apply_settings(root, change.settings)
    new_text = tomlkit.dumps(doc)
    problems: list[config.Problem] = []
    main = config.main_from_text(p.config_file, new_text, problems)
    if main is None:
        raise ConfigureError("\n".join(str(x) for x in problems) + "\nnothing was written")
    identity_changed = change.profile is not None or keys is not None
    if change.check and (identity_changed or _touches_sts(change)):
        if main.root.systemd_credential and not identity_changed:
            say("not checked with AWS: a systemd credential is readable by its unit only")
        else:
            say(check_identity(main.root, keys if keys is not None else _key_at(p, old)))
    p.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if new is not None and keys is not None:
        _put(p, new, keys, say)
    try:
        atomic_write(p.config_file, new_text, 0o644)
    except OSError as exc:
        if new is not None and new != old:
            _empty(p, new, lambda _: None)
        raise ConfigureError(f"{p.config_file}: cannot write: {exc.strerror}") from None
    if old is not None and new is not None and new != old:
        _empty(p, old, say)
    elif old is not None and change.profile:
        where = f"keyring item dyncreds/{old.name}" if old.store == "keyring" else old.name
        say(f"the old key is still in {where}; delete it when the profile works")


def _plan_key(
    p: paths.Paths, change: RootChange, root: Any, old: Place | None
) -> tuple[Place | None, StaticKeys | None]:
    """Rewrite the store keys of [root]; return where the static key goes and the
    key to put there (None, None: the key stays where it is, or there is none)."""
    if change.profile:
        for store in STORES:
            root.pop(store, None)
        root["profile"] = change.profile
        return None, None
    target = change.store or (old.store if old else "file")
    if change.new_key is None and change.store is None:
        return None, None  # settings only
    keys = change.new_key
    if target == "keyring":
        new = Place("keyring", change.keyring_item)
    else:
        new = Place("file", old.name if old and old.store == "file" else DEFAULT_FILE)
    if keys is None:  # a move: the key that is there, read now
        if old is None:
            raise ConfigureError(_no_key_to_move(root))
        if new == old:
            return None, None
        keys = _key_at(p, old)
    for store in STORES:
        root.pop(store, None)
    root["keyring" if new.store == "keyring" else "credentials_file"] = new.name
    return new, keys


def _no_key_to_move(root: Any) -> str:
    if root.get("systemd_credential"):
        return (
            "the root key is a systemd credential, which only its unit can read: give the key "
            "(--access-key-id and the secret on stdin) to store it elsewhere"
        )
    what = f"profile {root['profile']!r}" if root.get("profile") else "the default chain"
    return (
        f"the root is {what}, not a stored key: give the key (--access-key-id and the "
        "secret on stdin, or a prompt) to store one"
    )


def _apply_settings(root: Any, settings: dict[str, str | None]) -> None:
    for key, value in settings.items():
        if value is None:
            continue
        if value == "":
            root.pop(key, None)
        else:
            root[key] = value


def _touches_sts(change: RootChange) -> bool:
    return any(change.settings.get(k) is not None for k in ("region", "sts_endpoint"))


def _key_at(p: paths.Paths, place: Place | None) -> StaticKeys | None:
    if place is None:
        return None
    try:
        if place.store == "keyring":
            return read_keyring(place.name)
        return read_credentials_file(p.config_dir / place.name)
    except DyncredsError as exc:
        raise ConfigureError(f"{exc.message}; nothing was written") from None


def _put(p: paths.Paths, place: Place, keys: StaticKeys, say: Callable[[str], None]) -> None:
    if place.store == "keyring":
        try:
            write_keyring(place.name, keys)
        except DyncredsError as exc:
            raise ConfigureError(f"{exc.message}; nothing was written") from None
        say(f"stored the key in the OS keyring (dyncreds/{place.name})")
        return
    path = p.config_dir / place.name
    try:
        write_credentials_file(path, keys)
    except OSError as exc:
        raise ConfigureError(f"{path}: cannot write: {exc.strerror}; nothing was written") from None
    say(f"wrote {path} (mode 0600)")


def _empty(p: paths.Paths, place: Place, say: Callable[[str], None]) -> None:
    """The old place, once config.toml no longer names it. A failure here leaves a
    stale copy, said plainly (the configuration is already right)."""
    if place.store == "file":
        path = p.config_dir / place.name
        if path.exists():
            path.unlink()
            say(f"removed {path}")
        return
    try:
        if delete_keyring(place.name):
            say(f"deleted the keyring item dyncreds/{place.name}")
    except DyncredsError as exc:
        say(f"could not delete the old keyring item dyncreds/{place.name}: {exc.message}")


def check_identity(root: config.RootSettings, keys: StaticKeys | None) -> str:
    """sts:GetCallerIdentity with the new root: refused means nothing is written;
    unreachable is said, and does not stop the change (an offline set-up)."""
    from dyncreds.aws.probe import UNREACHABLE, caller_arn  # boto3: only for this check
    from dyncreds.protocol import Upstream

    try:
        arn = caller_arn(
            region=root.region,
            sts_endpoint=root.sts_endpoint,
            profile=root.profile,
            access_key_id=keys.access_key_id if keys else None,
            secret=keys.secret_access_key if keys else None,
        )
    except Upstream as exc:
        if exc.aws_code in UNREACHABLE:
            return f"could not check the root with AWS ({exc.message}); saving anyway"
        raise ConfigureError(
            f"AWS refused the new root: {exc.message}; nothing was written "
            "(--no-check skips this check)"
        ) from None
    except DyncredsError as exc:
        raise ConfigureError(f"{exc.message}; nothing was written") from None
    return f"checked: the root is {arn}"
