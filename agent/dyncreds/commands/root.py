"""Root commands: ``init``, ``configure root`` (Vault's config/root) and
``rotate-root``. The root key file is written with aws/rootkeys.py, which does
not import boto3."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dyncreds.client import EXIT_OK, EXIT_USAGE, Client
from dyncreds.commands.common import CliError, Commands, get_paths, print_json
from dyncreds.commands.roles import reload_agent

if TYPE_CHECKING:
    import tomlkit

    from dyncreds import config
    from dyncreds.aws.rootkeys import StaticKeys

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
# neither: boto3's default credential chain
region = "us-east-1"
# iam_endpoint = "https://iam.amazonaws.com"
# sts_endpoint = "https://sts.us-east-1.amazonaws.com"
# max_retries = 5
# username_template = "dyncreds-{user}-{role}-{unix_time}-{random}"

[lease]
# Defaults for iam_user roles (Vault: config/lease).
# ttl = "1h"
# max_ttl = "12h"
"""


def cmd_init(args: argparse.Namespace) -> int:
    from dyncreds.files import atomic_write

    p = get_paths(args)
    if p.config_file.exists() and not args.force:
        print(f"dyncreds: {p.config_file} exists (use --force to overwrite)", file=sys.stderr)
        return EXIT_USAGE
    p.config_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(p.config_file, STARTER_CONFIG, 0o644)
    p.roles_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"wrote {p.config_file}; next: `dyncreds configure root`, then "
        f"`dyncreds role create NAME --type iam_user --policy-file policy.json`"
    )
    return EXIT_OK


def cmd_configure_root(args: argparse.Namespace) -> int:
    """Vault's config/root: the agent's own identity, region and endpoints.

    Everything is checked before anything is written - the flags, the resulting
    config.toml, and (unless --no-check) the key itself with sts:GetCallerIdentity -
    and then each file is replaced atomically, config.toml keeping its comments."""
    import tomlkit

    from dyncreds import config
    from dyncreds.files import atomic_write

    p = get_paths(args)
    if args.profile and (args.access_key_id or args.secret_stdin):
        raise CliError(
            "--profile and --access-key-id/--secret-stdin exclude each other", EXIT_USAGE
        )
    doc = _load_document(p.config_file)
    root = doc.get("root")
    if root is None:
        root = tomlkit.table()
        doc["root"] = root
    keys = None if args.profile else _read_key(args)
    old_file = _choose_store(root, keys, args)
    for key in (
        "region",
        "iam_endpoint",
        "sts_endpoint",
        "mfa_serial",
        "unlock_for",
        "rotate_every",
    ):
        value = getattr(args, key)
        if value:
            root[key] = value
    new_text = tomlkit.dumps(doc)
    problems: list[config.Problem] = []
    main = config.main_from_text(p.config_file, new_text, problems)
    if main is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        print("dyncreds: nothing was written", file=sys.stderr)
        return EXIT_USAGE
    if not args.no_check:
        _check_identity(main.root, keys)
    p.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if keys is not None:
        _store_key(p.config_dir, keys, args, root.get("credentials_file"))
    atomic_write(p.config_file, new_text, 0o644)
    if keys is not None and args.store == "keyring" and old_file:
        # Moved to the keyring: the plain copy goes (after config.toml stops naming it).
        (p.config_dir / str(old_file)).unlink(missing_ok=True)
        print(f"removed {p.config_dir / str(old_file)}: the key lives in the keyring now")
    print(f"wrote {p.config_file}; {reload_agent(p)}")
    return EXIT_OK


def _choose_store(root: Any, keys: StaticKeys | None, args: argparse.Namespace) -> Any:
    """Exactly one store in [root]: the one chosen now. Returns the old key file's name."""
    old_file = root.get("credentials_file")
    for store in ("profile", "credentials_file", "keyring", "systemd_credential"):
        root.pop(store, None)
    if keys is None:
        root["profile"] = args.profile
    elif args.store == "keyring":
        root["keyring"] = args.keyring_item
    else:
        root["credentials_file"] = old_file or "root-credentials.toml"
    return old_file


def _store_key(
    config_dir: Path, keys: StaticKeys, args: argparse.Namespace, file: str | None
) -> None:
    from dyncreds.aws.rootkeys import write_credentials_file, write_keyring
    from dyncreds.protocol import DyncredsError

    if args.store == "keyring":
        try:
            write_keyring(args.keyring_item, keys)
        except DyncredsError as exc:
            raise CliError(f"{exc.message}; nothing was written", EXIT_USAGE) from None
        print(f"stored the key in the OS keyring (dyncreds/{args.keyring_item})")
        return
    creds_path = config_dir / str(file)
    write_credentials_file(creds_path, keys)
    print(f"wrote {creds_path} (mode 0600)")


def _load_document(path: Path) -> tomlkit.TOMLDocument:
    """config.toml as an editable document that keeps its comments and layout
    (the commented starter when there is none yet)."""
    import tomlkit
    import tomlkit.exceptions

    from dyncreds.config.problems import read_text

    try:
        text = read_text(path)
    except FileNotFoundError:
        text = STARTER_CONFIG
    except (OSError, ValueError) as exc:
        raise CliError(f"{path}: cannot read: {exc}", EXIT_USAGE) from None
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise CliError(f"{path}: invalid TOML: {exc}; fix it first", EXIT_USAGE) from None


def _read_key(args: argparse.Namespace) -> StaticKeys:
    import getpass

    from dyncreds.aws.rootkeys import StaticKeys
    from dyncreds.leases import Secret

    key_id = args.access_key_id or os.environ.get("DYNCREDS_ROOT_ACCESS_KEY_ID")
    if args.secret_stdin:
        if not key_id:
            raise CliError("--secret-stdin needs --access-key-id", EXIT_USAGE)
        secret = sys.stdin.readline().strip()
    else:
        if not sys.stdin.isatty():
            raise CliError(
                "no terminal to prompt on; pass --access-key-id and pipe the secret with "
                "--secret-stdin (or use --profile)",
                EXIT_USAGE,
            )
        key_id = key_id or input("AWS access key id: ").strip()
        secret = getpass.getpass("AWS secret access key (not echoed): ").strip()
    if not key_id or not secret:
        raise CliError("both the access key id and the secret are required", EXIT_USAGE)
    return StaticKeys(key_id, Secret(secret))


def _check_identity(root: config.RootSettings, keys: StaticKeys | None) -> None:
    """sts:GetCallerIdentity with the new root: refused means nothing is written;
    unreachable is said, and does not stop the change (an offline set-up)."""
    from dyncreds.aws.probe import UNREACHABLE, caller_arn  # boto3: only for this check
    from dyncreds.protocol import DyncredsError, Upstream

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
            print(f"dyncreds: could not check the root with AWS ({exc.message}); saving anyway")
            return
        raise CliError(
            f"AWS refused the new root: {exc.message}; nothing was written "
            "(--no-check skips this check)",
            EXIT_USAGE,
        ) from None
    except DyncredsError as exc:
        raise CliError(f"{exc.message}; nothing was written", EXIT_USAGE) from None
    print(f"checked: the root is {arn}")


def cmd_rotate_root(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        key = client.request("rotate_root")["access_key_id"]
    if args.json:
        print_json({"access_key_id": key})
    else:
        print(f"root rotated; new access key {key}")
    return EXIT_OK


def cmd_unlock(args: argparse.Namespace) -> int:
    """Give the agent an MFA session: the code from --code, or asked on the terminal."""
    code = args.code
    if code is None:
        if not sys.stdin.isatty():
            raise CliError("no terminal to ask for the MFA code on; pass --code CODE", EXIT_USAGE)
        code = input("MFA code: ").strip()
    with Client(get_paths(args).socket, timeout=60.0) as client:
        until = client.request("unlock", code=code)["unlocked_until"]
    if args.json:
        print_json({"unlocked_until": until})
    else:
        print(f"unlocked until {until}")
    return EXIT_OK


def cmd_lock(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        client.request("lock")
    if args.json:
        print_json({"locked": True})
    else:
        print("locked: every credential request is refused until `dyncreds unlock`")
    return EXIT_OK


def add_commands(cli: Commands) -> None:
    p = cli.add("init", cmd_init, "write a commented starter config.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.toml")
    configure = cli.group("configure", "configure the root identity", "WHAT")
    p = configure.add(
        "root",
        cmd_configure_root,
        "root AWS identity: a profile, or an access key whose secret "
        "is read from a prompt or stdin (never from the command line)",
    )
    p.add_argument("--profile", help="use this ~/.aws/config profile as the root")
    p.add_argument("--access-key-id", help="the root's access key id")
    p.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the secret access key from the first line of stdin",
    )
    p.add_argument("--region", help="the root's region")
    p.add_argument("--iam-endpoint", dest="iam_endpoint", help="IAM endpoint URL")
    p.add_argument("--sts-endpoint", dest="sts_endpoint", help="STS endpoint URL")
    p.add_argument(
        "--store",
        choices=["file", "keyring"],
        default="file",
        help="where the key goes: a 0600 file, or the OS keyring (Secret Service)",
    )
    p.add_argument(
        "--keyring-item", default="root", help="the keyring item's name (service dyncreds)"
    )
    p.add_argument(
        "--mfa-serial", dest="mfa_serial", help="MFA device ARN: the agent starts locked"
    )
    p.add_argument("--unlock-for", dest="unlock_for", help="MFA session length (15m to 36h)")
    p.add_argument("--rotate-every", dest="rotate_every", help="rotate the root key this often")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="do not check the new root with sts:GetCallerIdentity before saving it",
    )
    cli.add("rotate-root", cmd_rotate_root, "rotate the agent's own static access key")
    p = cli.add("unlock", cmd_unlock, "give the agent an MFA session (root.mfa_serial)")
    p.add_argument(
        "--code", help="the MFA device's current code (asked on a terminal if not given)"
    )
    cli.add("lock", cmd_lock, "forget the MFA session and refuse every credential request")
