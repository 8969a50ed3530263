"""A keyring backend that is the real Secret Service with faults at its edge, chosen
by an agent process through keyring's own mechanism
(``PYTHON_KEYRING_BACKEND=tests.keyring_faults.FaultyKeyring``). dyncreds' code
runs unchanged; only what the keyring answers is changed.

The fault is read at every call from the file named by ``DYNCREDS_KEYRING_FAULT``,
so a test switches it while the agent runs:

- ``write-lost``: set_password writes, then raises (the write landed, the answer
  was lost);
- ``write-fails``: set_password raises without writing;
- ``write-then-unreadable``: as write-lost, and from then on every read raises (a
  keyring that died right after the write) until the test clears the file;
- ``read-fails``: every read raises.
"""

from __future__ import annotations

import os
from pathlib import Path

import keyring.errors
from keyring.backends import SecretService


def _faults() -> set[str]:
    path = os.environ.get("DYNCREDS_KEYRING_FAULT")
    if not path:
        return set()
    try:
        return set(Path(path).read_text().split())
    except FileNotFoundError:
        return set()


class FaultyKeyring(SecretService.Keyring):
    def get_password(self, service: str, username: str) -> str | None:
        if "read-fails" in _faults():
            raise keyring.errors.KeyringLocked("injected: the keyring cannot be read")
        return super().get_password(service, username)  # type: ignore[no-untyped-call,no-any-return]

    def set_password(self, service: str, username: str, password: str) -> None:
        faults = _faults()
        if "write-fails" in faults:
            raise keyring.errors.PasswordSetError("injected: the write failed")
        super().set_password(service, username, password)  # type: ignore[no-untyped-call]
        if "write-then-unreadable" in faults:
            Path(os.environ["DYNCREDS_KEYRING_FAULT"]).write_text("read-fails")
            raise keyring.errors.PasswordSetError("injected: the keyring died after writing")
        if "write-lost" in faults:
            raise keyring.errors.PasswordSetError("injected: the answer was lost")
