"""The embedded journal's store: SQLite in the state dir, WAL, synchronous=FULL.

Only the store's primitives live here (put, update, delete; the rows are loaded
when it opens); what each write changes, and the missing-record rule, are
rules.py's. Every write is one durable transaction, run in a worker thread so that an fsync
never stalls the event loop (and with it every client). Writes are serialized:
one connection, one writer at a time, in arrival order (trio's Lock is fair), so
the in-memory copy of the rows - which every read uses - is updated in the same
order as the file. A journal in 0.1's format is refused, untouched, with what to
do (``OldJournal``): its records name users that still need revoking.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import trio

from dyncreds.journal import JournalUnavailable, LostRecord, Record
from dyncreds.journal.rules import Rules

T = TypeVar("T")
Offload = Callable[[Callable[[], Any]], Awaitable[Any]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    lease_id      TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    access_key_id TEXT,
    state         TEXT NOT NULL CHECK (state IN ('creating', 'active', 'revoking')),
    created_at    REAL NOT NULL,
    revoke_at     REAL NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  REAL NOT NULL DEFAULT 0,
    last_error    TEXT,
    settle_until  REAL NOT NULL DEFAULT 0,
    thing         TEXT NOT NULL DEFAULT 'user',
    detail        TEXT
);
CREATE INDEX IF NOT EXISTS leases_due ON leases (revoke_at);
"""

_COLUMNS = (
    "lease_id, role, user_name, access_key_id, state, created_at, revoke_at, attempts, "
    "next_attempt, last_error, settle_until, thing, detail"
)
_FIELDS = frozenset(field.name for field in dataclasses.fields(Record)) - {"lease_id"}


class OldJournal(Exception):
    """A journal in 0.1's format (no settle_until, thing, detail): refused, never
    guessed at - its records name IAM users that still need revoking."""


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


class SqliteJournal(Rules):
    def __init__(self, path: Path | str, *, offload: Offload = in_thread):
        """Opens (creating if needed) and reads every row into memory.

        ``offload`` runs a blocking call off the event loop; timing tests on trio's
        mock clock pass one that runs it inline, as a thread would let the mock
        clock jump."""
        super().__init__()
        self.path = path
        self._offload = offload
        # isolation_level=None: every write below is one statement, so autocommit
        # is one durable transaction per write. check_same_thread=False: the one
        # connection is used by one thread at a time (the lock), not always the same.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._refuse_0_1(path)  # before anything is written to the file
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._rows: dict[str, Record] = {
            row[0]: Record(*row) for row in self._db.execute(f"SELECT {_COLUMNS} FROM leases")
        }

    def _refuse_0_1(self, path: Path | str) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(leases)")}
        if columns and not {"settle_until", "thing", "detail"} <= columns:
            self._db.close()
            raise OldJournal(
                f"the journal {path} was written by dyncreds 0.1, which this version cannot "
                "read: start dyncreds 0.2 on it once (it upgrades the file), or run "
                "`dyncreds revoke --all` with 0.1 and remove the file"
            )

    async def close(self) -> None:
        async with self._lock:
            await self._offload(self._db.close)

    def close_now(self) -> None:
        """At exit, outside trio: every write is already durable."""
        self._db.close()

    async def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        def run() -> int:
            return self._db.execute(sql, params).rowcount

        try:
            rowcount: int = await self._offload(run)
        except sqlite3.Error as exc:
            # A full disk or a broken file must not take the agent down: the caller
            # gets an error it can report, and nothing is served that is not journaled.
            raise JournalUnavailable(
                f"the journal {self.path} cannot be written ({exc}); "
                "free disk space or fix the state directory"
            ) from None
        return rowcount

    # ---------------------------------------------------------------- primitives

    async def _store_put(self, record: Record) -> None:
        await self._write(
            f"INSERT INTO leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            dataclasses.astuple(record),
        )

    async def _store_update(self, lease_id: str, changes: dict[str, Any]) -> None:
        # The names are Record's fields (rules.py writes them), never a caller's text.
        assert changes and set(changes) <= _FIELDS, changes
        assignments = ", ".join(f"{name} = ?" for name in changes)
        changed = await self._write(
            f"UPDATE leases SET {assignments} WHERE lease_id = ?", (*changes.values(), lease_id)
        )
        if not changed:
            raise LostRecord(f"journal record {lease_id} is gone from {self.path}")

    async def _store_delete(self, lease_id: str) -> bool:
        return await self._write("DELETE FROM leases WHERE lease_id = ?", (lease_id,)) > 0

    def bulk_insert(self, records: Iterable[Record]) -> None:
        """For benchmarks and tests that need a large journal quickly (not in trio)."""
        rows = [dataclasses.astuple(r) for r in records]
        self._db.execute("BEGIN")
        self._db.executemany(
            f"INSERT INTO leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )
        self._db.execute("COMMIT")
        self._rows.update((row[0], Record(*row)) for row in rows)

    # ---------------------------------------------------------------- reads
