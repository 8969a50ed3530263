"""The journal: what this agent has created in AWS, so that nothing outlives its
announced expiry, even if the agent is killed mid-way.

SQLite in the state dir, WAL mode, synchronous=FULL: a row is committed
*before* the AWS call that creates the thing it describes (Vault's WAL rollback
idea), updated as each step completes, and deleted once the thing is gone from
AWS. No secrets are ever written: a row holds names, ids and times.

A row's ``revoke_at`` is the single source of truth for when its user is
revoked: the announced expiry for a served lease, "now" for a half-created one
or an explicit revoke. The reaper (agent.py) revokes every row that is due.

States:
  creating  - CreateUser may have happened; keys may exist; nothing was served.
  active    - served to clients; revoked at revoke_at.
  revoking  - a revocation has started (and may have to be retried).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
    last_error    TEXT
);
CREATE INDEX IF NOT EXISTS leases_due ON leases (revoke_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Record:
    lease_id: str
    role: str
    user_name: str
    access_key_id: str | None
    state: str
    created_at: float
    revoke_at: float
    attempts: int
    next_attempt: float
    last_error: str | None

    def due(self, now: float) -> bool:
        return self.revoke_at <= now and self.next_attempt <= now


_COLUMNS = (
    "lease_id, role, user_name, access_key_id, state, created_at, revoke_at, attempts, "
    "next_attempt, last_error"
)


class Journal:
    def __init__(self, path: Path | str):
        self.path = path
        # isolation_level=None: we issue our own BEGIN/COMMIT; every write below is
        # one statement, so autocommit is one durable transaction per write.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- writes

    def creating(
        self, lease_id: str, role: str, user_name: str, now: float, revoke_at: float
    ) -> None:
        """Before CreateUser. ``revoke_at`` is the planned expiry; recovery treats a
        row still in 'creating' as due at once."""
        self._db.execute(
            "INSERT INTO leases (lease_id, role, user_name, state, created_at, revoke_at) "
            "VALUES (?, ?, ?, 'creating', ?, ?)",
            (lease_id, role, user_name, now, revoke_at),
        )

    def key_created(self, lease_id: str, access_key_id: str) -> None:
        self._db.execute(
            "UPDATE leases SET access_key_id = ? WHERE lease_id = ?", (access_key_id, lease_id)
        )

    def activate(self, lease_id: str, revoke_at: float) -> None:
        """The lease is about to be served: from now on its expiry is a promise."""
        self._db.execute(
            "UPDATE leases SET state = 'active', revoke_at = ? WHERE lease_id = ?",
            (revoke_at, lease_id),
        )

    def extend(self, lease_id: str, revoke_at: float) -> None:
        self._db.execute(
            "UPDATE leases SET revoke_at = ? WHERE lease_id = ? AND state = 'active'",
            (revoke_at, lease_id),
        )

    def revoke_now(self, lease_id: str, now: float) -> bool:
        cursor = self._db.execute(
            "UPDATE leases SET revoke_at = MIN(revoke_at, ?), next_attempt = 0 WHERE lease_id = ?",
            (now, lease_id),
        )
        return cursor.rowcount > 0

    def revoking(self, lease_id: str) -> None:
        self._db.execute("UPDATE leases SET state = 'revoking' WHERE lease_id = ?", (lease_id,))

    def revoke_failed(self, lease_id: str, error: str, next_attempt: float) -> None:
        self._db.execute(
            "UPDATE leases SET attempts = attempts + 1, last_error = ?, next_attempt = ? "
            "WHERE lease_id = ?",
            (error[:500], next_attempt, lease_id),
        )

    def forget(self, lease_id: str) -> bool:
        """The user is gone from AWS (or the operator said to forget it)."""
        cursor = self._db.execute("DELETE FROM leases WHERE lease_id = ?", (lease_id,))
        return cursor.rowcount > 0

    def recover(self, now: float) -> int:
        """At start-up: half-created users are cleaned up at once. Returns how many."""
        cursor = self._db.execute(
            "UPDATE leases SET revoke_at = MIN(revoke_at, ?), next_attempt = 0 "
            "WHERE state IN ('creating', 'revoking')",
            (now,),
        )
        return cursor.rowcount

    # ---------------------------------------------------------------- reads

    def get(self, lease_id: str) -> Record | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM leases WHERE lease_id = ?", (lease_id,)
        ).fetchone()
        return Record(*row) if row else None

    def all(self) -> list[Record]:
        return [
            Record(*row)
            for row in self._db.execute(f"SELECT {_COLUMNS} FROM leases ORDER BY revoke_at")
        ]

    def due(self, now: float, limit: int = 100) -> list[Record]:
        return [
            Record(*row)
            for row in self._db.execute(
                f"SELECT {_COLUMNS} FROM leases WHERE revoke_at <= ? AND next_attempt <= ? "
                "ORDER BY revoke_at LIMIT ?",
                (now, now, limit),
            )
        ]

    def next_due(self) -> float | None:
        row = self._db.execute("SELECT MIN(MAX(revoke_at, next_attempt)) FROM leases").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def user_names(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT user_name FROM leases")}

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM leases").fetchone()[0])

    # ---------------------------------------------------------------- meta

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def bulk_insert(self, records: Iterable[Record]) -> None:
        """For benchmarks and tests that need a large journal quickly."""
        self._db.execute("BEGIN")
        self._db.executemany(
            f"INSERT INTO leases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.lease_id,
                    r.role,
                    r.user_name,
                    r.access_key_id,
                    r.state,
                    r.created_at,
                    r.revoke_at,
                    r.attempts,
                    r.next_attempt,
                    r.last_error,
                )
                for r in records
            ],
        )
        self._db.execute("COMMIT")
