"""A static role's current key, kept at rest so that a restart serves it again
instead of making a new one (two restarts used to fill both of IAM's key slots).

The secret is sealed (AES-256-GCM, `cryptography`) in ``STATE/static/ROLE.sealed``
with a key held where the root's key is held, so it is protected like the root:

- a keyring root: a second item of the keyring (``dyncreds/NAME.seal``);
- a systemd credential: a key derived from the credential itself (HMAC), never
  written anywhere;
- a credentials file, a profile or the default chain: ``STATE/seal.key``, 0600 -
  what a plain root file has.

The lease id and key id are the seal's associated data: a file moved to another
role or lease does not open. The journal says whether the lease is still current
(an active record, not yet due); the file only holds what the journal must not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dyncreds import logs
from dyncreds.aws.rootkeys import KEYRING_SERVICE
from dyncreds.config import RootSettings
from dyncreds.files import atomic_write
from dyncreds.journal import Record
from dyncreds.leases import Lease, Secret

log = logs.get("aws")

SEAL_FILE = "seal.key"
DERIVE = b"dyncreds static_user seal v1"


class StaticStore:
    def __init__(self, state_dir: Path, root: RootSettings, credentials_dir: Path | None = None):
        self.dir = state_dir / "static"
        self.state_dir = state_dir
        self.root = root
        self.credentials_dir = credentials_dir  # $CREDENTIALS_DIRECTORY (systemd)
        self._key: bytes | None = None

    # ------------------------------------------------------------------ the seal's key

    def _seal_key(self) -> bytes:
        if self._key is None:
            self._key = self._load_or_make_key()
        return self._key

    def _load_or_make_key(self) -> bytes:
        if self.root.systemd_credential:
            directory = self.credentials_dir or Path(os.environ.get("CREDENTIALS_DIRECTORY", ""))
            material = (directory / self.root.systemd_credential).read_bytes()
            return hmac.new(material, DERIVE, hashlib.sha256).digest()
        if self.root.keyring:
            import keyring  # D-Bus: only for a keyring root

            name = f"{self.root.keyring}.seal"
            text = keyring.get_password(KEYRING_SERVICE, name)
            if text is None:
                text = base64.b64encode(secrets.token_bytes(32)).decode()
                keyring.set_password(KEYRING_SERVICE, name, text)
            return base64.b64decode(text)
        path = self.state_dir / SEAL_FILE
        try:
            return base64.b64decode(path.read_text())
        except FileNotFoundError:
            key = secrets.token_bytes(32)
            atomic_write(path, base64.b64encode(key).decode(), 0o600)
            return key

    # ------------------------------------------------------------------ leases

    def _path(self, role: str) -> Path:
        return self.dir / f"{role}.sealed"

    def save(self, lease: Lease) -> None:
        """Seal the role's current key (blocking; a worker thread)."""
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self._seal_key()).encrypt(
            nonce, lease.secret_access_key.reveal().encode(), _aad(lease.id, lease.access_key_id)
        )
        body = {
            "lease_id": lease.id,
            "access_key_id": lease.access_key_id,
            "nonce": base64.b64encode(nonce).decode(),
            "sealed": base64.b64encode(sealed).decode(),
        }
        self.dir.mkdir(mode=0o700, exist_ok=True)
        atomic_write(self._path(lease.role), json.dumps(body), 0o600)

    def load(self, role: str, record: Record) -> Secret | None:
        """The secret of the journaled lease ``record``, if this role's sealed file
        is that lease's and opens; None otherwise (then a new key is made)."""
        try:
            body = json.loads(self._path(role).read_text())
            if body["lease_id"] != record.lease_id or body["access_key_id"] != (
                record.access_key_id
            ):
                return None
            secret = AESGCM(self._seal_key()).decrypt(
                base64.b64decode(body["nonce"]),
                base64.b64decode(body["sealed"]),
                _aad(record.lease_id, str(record.access_key_id)),
            )
        except FileNotFoundError:
            return None
        except (Exception, InvalidTag) as exc:  # a broken file, a keyring that is locked
            # Then a new key is made, as before 0.3: the failure is only logged.
            log.warning("static_user.unseal_failed", role=role, error=type(exc).__name__)
            return None
        return Secret(secret.decode())

    def forget(self, role: str, lease_id: str) -> None:
        """The lease's key was deleted: its sealed copy goes too (blocking). A newer
        lease's file (the role rotated since) stays; so does one that cannot be read."""
        path = self._path(role)
        try:
            if json.loads(path.read_text()).get("lease_id") == lease_id:
                path.unlink()
        except (OSError, ValueError, AttributeError):
            pass


def _aad(lease_id: str, access_key_id: str) -> bytes:
    return f"{lease_id}\0{access_key_id}".encode()
