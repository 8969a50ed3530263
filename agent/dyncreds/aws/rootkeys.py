"""Where the root's static key lives, read and written without boto3 (the CLI
and the console use this module too): the rotatable credentials file (TOML with
``access_key_id`` and ``secret_access_key``, readable by its owner only), an OS
keyring item, or a systemd credential (read only) in the same TOML.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dyncreds.config.problems import read_text
from dyncreds.files import atomic_write
from dyncreds.leases import Secret
from dyncreds.protocol import Unavailable


@dataclass(frozen=True)
class StaticKeys:
    access_key_id: str
    secret_access_key: Secret


KEYRING_SERVICE = "dyncreds"


def _keys_from_toml(text: str, where: str) -> StaticKeys:
    try:
        data = tomllib.loads(text)
        key_id, secret = data["access_key_id"], data["secret_access_key"]
    except (ValueError, KeyError):
        raise Unavailable(
            f"{where}: needs access_key_id and secret_access_key (TOML strings)"
        ) from None
    if not isinstance(key_id, str) or not isinstance(secret, str):
        raise Unavailable(f"{where}: access_key_id and secret_access_key must be strings")
    return StaticKeys(key_id, Secret(secret))


def _why(exc: OSError | ValueError) -> str:
    """Why a key file could not be read - never a byte of it (a decode error quotes one)."""
    if isinstance(exc, OSError):
        return str(exc.strerror or type(exc).__name__)
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(exc)  # read_text's own reasons: not a regular file, too large


def _keys_toml(keys: StaticKeys) -> str:
    return (
        f'access_key_id = "{keys.access_key_id}"\n'
        f'secret_access_key = "{keys.secret_access_key.reveal()}"\n'
    )


def read_credentials_file(path: Path) -> StaticKeys:
    """The rotatable root key file: TOML with access_key_id and secret_access_key,
    readable by its owner only."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise Unavailable(
            f"{path}: root credentials file not found; run `dyncreds configure root`"
        ) from None
    except OSError as exc:
        raise Unavailable(f"{path}: cannot read: {exc.strerror or exc}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise Unavailable(
            f"{path}: root credentials file is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
        )
    if info.st_uid != os.getuid():
        raise Unavailable(f"{path}: root credentials file is owned by another user")
    try:
        text = read_text(path)
    except (OSError, ValueError) as exc:
        raise Unavailable(f"{path}: cannot read: {_why(exc)}") from None
    return _keys_from_toml(text, str(path))


def read_systemd_credential(name: str, env: dict[str, str] | None = None) -> StaticKeys:
    """``$CREDENTIALS_DIRECTORY/NAME`` (TOML, the credentials file's two fields), as
    systemd hands it to the unit - decrypted, if it was ``LoadCredentialEncrypted=``."""
    environ = os.environ if env is None else env
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise Unavailable(
            f"[root] systemd_credential = {name!r} needs $CREDENTIALS_DIRECTORY: run the agent "
            f"from its unit with LoadCredentialEncrypted={name}:... (see the README)"
        )
    path = Path(directory) / name
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise Unavailable(f"{path}: no such systemd credential; check LoadCredential*=") from None
    except (OSError, ValueError) as exc:
        raise Unavailable(f"{path}: cannot read: {_why(exc)}") from None
    return _keys_from_toml(text, str(path))


def read_keyring(name: str) -> StaticKeys:
    """The OS keyring's item (Secret Service: GNOME Keyring, KWallet, KeePassXC)."""
    import keyring  # D-Bus and its friends: only for a keyring root
    import keyring.errors

    try:
        text = keyring.get_password(KEYRING_SERVICE, name)
    except keyring.errors.KeyringError as exc:
        raise Unavailable(
            f"the OS keyring is not available ({type(exc).__name__}: {exc}); unlock it, or "
            "use another [root] store"
        ) from None
    if text is None:
        raise Unavailable(
            f"no keyring item {KEYRING_SERVICE}/{name}: "
            "run `dyncreds configure root --store keyring`"
        )
    return _keys_from_toml(text, f"keyring item {KEYRING_SERVICE}/{name}")


def write_keyring(name: str, keys: StaticKeys) -> None:
    import keyring
    import keyring.errors

    try:
        keyring.set_password(KEYRING_SERVICE, name, _keys_toml(keys))
    except keyring.errors.KeyringError as exc:
        raise Unavailable(f"cannot write the OS keyring ({type(exc).__name__}: {exc})") from None


def delete_keyring(name: str) -> bool:
    """Remove the item (a root moved elsewhere); False when there was none."""
    import keyring
    import keyring.errors

    try:
        keyring.delete_password(KEYRING_SERVICE, name)
    except keyring.errors.PasswordDeleteError:
        return False
    except keyring.errors.KeyringError as exc:
        raise Unavailable(f"cannot write the OS keyring ({type(exc).__name__}: {exc})") from None
    return True


def write_credentials_file(path: Path, keys: StaticKeys) -> None:
    """Atomically: temp file (0600) in the same directory, fsync, rename, fsync dir."""
    text = "# dyncreds root credentials; rotated by `dyncreds rotate-root`\n" + _keys_toml(keys)
    atomic_write(path, text, 0o600)
