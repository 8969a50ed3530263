"""The embedded journal: SQLite in the state dir, WAL, synchronous=FULL.

Every write is one durable transaction, run in a worker thread so that an fsync
never stalls the event loop (and with it every client). Writes are serialized:
one connection, one writer at a time, in arrival order (trio's Lock is fair), so
the in-memory copy of the rows - which every read uses - is updated in the same
order as the file.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import trio

from dyncreds.journal import JournalUnavailable, LostRecord, MemoryRows, Record

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
DROP TABLE IF EXISTS meta;
"""

UPGRADES = (
    ("settle_until", "REAL NOT NULL DEFAULT 0"),
    ("thing", "TEXT NOT NULL DEFAULT 'user'"),
    ("detail", "TEXT"),
)

_COLUMNS = (
    "lease_id, role, user_name, access_key_id, state, created_at, revoke_at, attempts, "
    "next_attempt, last_error, settle_until, thing, detail"
)


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


class SqliteJournal(MemoryRows):
    def __init__(self, path: Path | str, *, offload: Offload = in_thread):
        """Opens (creating if needed) and reads every row into memory.

        ``offload`` runs a blocking call off the event loop; timing tests on trio's
        mock clock pass one that runs it inline, as a thread would let the mock
        clock jump."""
        super().__init__()
        self.path = path
        self._offload = offload
        self._lock = trio.Lock()
        # isolation_level=None: every write below is one statement, so autocommit
        # is one durable transaction per write. check_same_thread=False: the one
        # connection is used by one thread at a time (the lock), not always the same.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(leases)")}
        for column, declaration in UPGRADES:  # a journal written by 0.1
            if column not in columns:
                self._db.execute(f"ALTER TABLE leases ADD COLUMN {column} {declaration}")
        self._rows: dict[str, Record] = {
            row[0]: Record(*row) for row in self._db.execute(f"SELECT {_COLUMNS} FROM leases")
        }

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

    def _update(self, lease_id: str, **changes: Any) -> None:
        record = self._rows.get(lease_id)
        if record is not None:
            self._rows[lease_id] = dataclasses.replace(record, **changes)

    # ---------------------------------------------------------------- writes

    async def creating(
        self,
        lease_id: str,
        role: str,
        user_name: str,
        now: float,
        revoke_at: float,
        *,
        thing: str = "user",
        detail: str | None = None,
    ) -> None:
        async with self._lock:
            await self._write(
                "INSERT INTO leases (lease_id, role, user_name, state, created_at, revoke_at, "
                "thing, detail) VALUES (?, ?, ?, 'creating', ?, ?, ?, ?)",
                (lease_id, role, user_name, now, revoke_at, thing, detail),
            )
            self._rows[lease_id] = Record(
                lease_id, role, user_name, None, "creating", now, revoke_at,
                thing=thing, detail=detail,
            )  # fmt: skip

    async def key_created(self, lease_id: str, access_key_id: str) -> None:
        async with self._lock:
            changed = await self._write(
                "UPDATE leases SET access_key_id = ? WHERE lease_id = ?",
                (access_key_id, lease_id),
            )
            if not changed:
                raise LostRecord(f"journal record {lease_id} vanished while issuing")
            self._update(lease_id, access_key_id=access_key_id)

    async def activate(self, lease_id: str, revoke_at: float) -> None:
        async with self._lock:
            changed = await self._write(
                "UPDATE leases SET state = 'active', revoke_at = ? WHERE lease_id = ?",
                (revoke_at, lease_id),
            )
            if not changed:
                raise LostRecord(f"journal record {lease_id} vanished while issuing")
            self._update(lease_id, state="active", revoke_at=revoke_at)

    async def extend(self, lease_id: str, revoke_at: float) -> None:
        # A lease revoked while its extension was in flight has no active row: fine.
        async with self._lock:
            changed = await self._write(
                "UPDATE leases SET revoke_at = ? WHERE lease_id = ? AND state = 'active'",
                (revoke_at, lease_id),
            )
            if changed:
                self._update(lease_id, revoke_at=revoke_at)

    async def revoke_now(self, lease_id: str, now: float) -> bool:
        async with self._lock:
            changed = await self._write(
                "UPDATE leases SET revoke_at = MIN(revoke_at, ?), next_attempt = 0 "
                "WHERE lease_id = ?",
                (now, lease_id),
            )
            record = self._rows.get(lease_id)
            if changed and record is not None:
                self._update(lease_id, revoke_at=min(record.revoke_at, now), next_attempt=0.0)
            return changed > 0

    async def abandon(self, lease_id: str, now: float, settle_until: float) -> None:
        async with self._lock:
            await self._write(
                "UPDATE leases SET revoke_at = ?, next_attempt = 0, settle_until = ? "
                "WHERE lease_id = ?",
                (now, settle_until, lease_id),
            )
            self._update(lease_id, revoke_at=now, next_attempt=0.0, settle_until=settle_until)

    async def recheck(self, lease_id: str, at: float) -> None:
        async with self._lock:
            await self._write(
                "UPDATE leases SET revoke_at = ?, next_attempt = 0, settle_until = 0, "
                "attempts = 0, state = 'revoking' WHERE lease_id = ?",
                (at, lease_id),
            )
            self._update(
                lease_id,
                revoke_at=at,
                next_attempt=0.0,
                settle_until=0.0,
                attempts=0,
                state="revoking",
            )

    async def revoking(self, lease_id: str) -> None:
        async with self._lock:
            await self._write(
                "UPDATE leases SET state = 'revoking' WHERE lease_id = ?", (lease_id,)
            )
            self._update(lease_id, state="revoking")

    async def revoke_failed(
        self, lease_id: str, error: str, next_attempt: float, *, count: bool = True
    ) -> None:
        add = 1 if count else 0
        async with self._lock:
            await self._write(
                "UPDATE leases SET attempts = attempts + ?, last_error = ?, next_attempt = ? "
                "WHERE lease_id = ?",
                (add, error[:500], next_attempt, lease_id),
            )
            record = self._rows.get(lease_id)
            if record is not None:
                self._update(
                    lease_id,
                    attempts=record.attempts + add,
                    last_error=error[:500],
                    next_attempt=next_attempt,
                )

    async def forget(self, lease_id: str) -> bool:
        async with self._lock:
            changed = await self._write("DELETE FROM leases WHERE lease_id = ?", (lease_id,))
            self._rows.pop(lease_id, None)
            return changed > 0

    async def recover(self, now: float) -> int:
        async with self._lock:
            count = await self._write(
                "UPDATE leases SET revoke_at = MIN(revoke_at, ?), next_attempt = 0 "
                "WHERE state IN ('creating', 'revoking')",
                (now,),
            )
            for record in list(self._rows.values()):
                if record.state in ("creating", "revoking"):
                    self._update(
                        record.lease_id, revoke_at=min(record.revoke_at, now), next_attempt=0.0
                    )
            return count

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
