"""The state directory: its lock, the agent id, and the journal's file.

Start-up order: create the directory (0700) -> take the lock (one agent per
state dir, for the agent's whole life) -> the agent id -> open the journal.
Every failure here is one line saying what and what to do (``StateError``).

The **agent id** is tagged on every IAM user the agent creates; the orphan
sweep adopts only users that carry it, and a fleet keys the agent's heartbeat
and records by it. It is random, made once and kept in ``agent-id``: an id
derived from the machine (as before 0.3) collided on cloned images and
containers sharing ``/etc/machine-id``. An id already written by an earlier
version is kept. A state dir that is copied still copies its id: a fleet detects
that (``agent-token`` holds the start tokens this state dir registered with;
fleet.py) and refuses the second holder.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import time
from pathlib import Path

from dyncreds.files import atomic_write
from dyncreds.journal.sqlite import OldJournal, SqliteJournal

LOCK_FILE = "agent.lock"
ID_FILE = "agent-id"
TOKEN_FILE = "agent-token"


class StateError(Exception):
    """One line for the operator; the agent exits 2."""


def prepare(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create the state directory {path}: {exc.strerror or exc}; "
            "fix its parent's permissions or set DYNCREDS_STATE_DIR / --state-dir"
        ) from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise StateError(
            f"the state directory {path} is not a writable directory; "
            "fix its permissions or set DYNCREDS_STATE_DIR / --state-dir"
        )


def lock(path: Path) -> int:
    """An exclusive lock on the state dir, held until the process exits (the fd is
    never closed). A second agent on the same state dir is refused, naming the first."""
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open {lock_path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateError(
            f"another dyncreds agent (pid {holder}) is using the state directory {path}; "
            "stop it first, or give this agent its own --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def agent_id(path: Path) -> str:
    id_path = path / ID_FILE
    try:
        value = id_path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateError(f"cannot read {id_path}: {exc.strerror or exc}") from None
    value = secrets.token_hex(8)
    try:
        atomic_write(id_path, value + "\n")
    except OSError as exc:
        raise StateError(f"cannot write {id_path}: {exc.strerror or exc}") from None
    return value


class TokenFile:
    """The fleet start tokens this state dir registered with (fleet.TokenStore)."""

    def __init__(self, path: Path):
        self.path = path / TOKEN_FILE
        self.where = str(path)

    def load(self) -> list[str]:
        try:
            return self.path.read_text().split()
        except FileNotFoundError:
            return []

    def save(self, tokens: list[str]) -> None:
        atomic_write(self.path, "".join(f"{t}\n" for t in tokens))


def open_journal(path: Path) -> tuple[SqliteJournal, Path | None]:
    """The journal; a file that is not a database is moved aside (and its users
    are left to the orphan sweep, which honours their announced expiry)."""
    journal = path / "journal.sqlite3"
    try:
        return SqliteJournal(journal), None
    except OldJournal as exc:
        raise StateError(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            raise StateError(f"cannot open the journal {journal}: {exc}") from None
    except OSError as exc:
        raise StateError(f"cannot open the journal {journal}: {exc}") from None
    aside = journal.with_name(f"journal.sqlite3.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        os.replace(journal, aside)
        for extra in ("-wal", "-shm"):
            Path(f"{journal}{extra}").unlink(missing_ok=True)
        return SqliteJournal(journal), aside
    except (OSError, sqlite3.Error) as exc:
        raise StateError(
            f"the journal {journal} is corrupt and cannot be replaced: {exc}"
        ) from None
