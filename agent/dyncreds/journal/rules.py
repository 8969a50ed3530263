"""The journal's rules, once, above its stores: what each write changes in a
record, and what a write does when its record is missing.

A store (sqlite.py, dynamodb.py) supplies four primitives - put a new record,
update one that exists, delete one, and load - and decides nothing; ``Rules``
turns every write of the ``Journal`` interface into them, under one trio.Lock so
that memory follows storage in order, and keeps memory (``MemoryRows``) in step.

The missing-record rule (ARCHITECTURE.md's invariant): a write that must touch a
record and finds none is an error, ``LostRecord``, never a silent success -
``key_created``, ``activate``, ``abandon``, ``recheck``, ``revoking``. The writes
whose record may rightly be gone already say so instead: ``extend`` (a lease
revoked while its extension was in flight), ``revoke_now`` and ``forget`` (False),
``revoke_failed`` (the record was forgotten while its attempt ran).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import trio

from dyncreds.journal import LostRecord, MemoryRows, Record


class Rules(MemoryRows):
    """The ``Journal`` interface over a store's primitives (the ``_store_*`` methods)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = trio.Lock()
        # Created by this process: recovery never makes an issuance in flight due
        # (a request can come before start-up recovery has run).
        self._this_run: set[str] = set()

    # ------------------------------------------------------------ a store's primitives

    async def _store_put(self, record: Record) -> None:
        """Write a new record, durably."""
        raise NotImplementedError

    async def _store_update(self, lease_id: str, changes: dict[str, Any]) -> None:
        """Change fields of a record memory holds, durably; ``LostRecord`` (or a
        subclass) if storage no longer has it as this agent's."""
        raise NotImplementedError

    async def _store_delete(self, lease_id: str) -> bool:
        """Delete a record memory holds; False if storage says it is not ours."""
        raise NotImplementedError

    async def _store_load(self) -> None:
        """Before recovery: memory holds storage's records (a no-op if it does)."""

    def _store_check(self) -> None:
        """Before every write to storage: raise if writes are refused (the fleet)."""

    async def _reclaim(self, lease_id: str, now: float, settle_until: float) -> bool:
        """``abandon`` found no record: a store that can journal the user again under
        a new record does so and says True (dynamodb.py); otherwise it is lost."""
        return False

    async def close(self) -> None:
        raise NotImplementedError

    def close_now(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ the one rule

    async def _set(self, lease_id: str, what: str, **changes: Any) -> None:
        """A write that must touch its record (call it under the lock)."""
        self._store_check()
        if lease_id not in self._rows:
            raise LostRecord(f"journal record {lease_id} vanished while {what}")
        await self._store_update(lease_id, changes)
        current = self._rows.get(lease_id)  # the store may have dropped it meanwhile
        if current is not None:
            self._rows[lease_id] = dataclasses.replace(current, **changes)

    # ------------------------------------------------------------ writes

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
        record = Record(
            lease_id, role, user_name, None, "creating", now, revoke_at, thing=thing, detail=detail
        )
        async with self._lock:
            self._store_check()
            await self._store_put(record)
            self._rows[lease_id] = record
            self._this_run.add(lease_id)

    async def key_created(self, lease_id: str, access_key_id: str) -> None:
        async with self._lock:
            await self._set(lease_id, "issuing", access_key_id=access_key_id)

    async def activate(self, lease_id: str, revoke_at: float) -> None:
        async with self._lock:
            await self._set(lease_id, "issuing", state="active", revoke_at=revoke_at)

    async def extend(self, lease_id: str, revoke_at: float) -> None:
        async with self._lock:
            record = self._rows.get(lease_id)
            if record is not None and record.state == "active":
                await self._set(lease_id, "extending", revoke_at=revoke_at)

    async def revoke_now(self, lease_id: str, now: float) -> bool:
        async with self._lock:
            record = self._rows.get(lease_id)
            if record is None:
                return False
            await self._set(
                lease_id, "revoking", revoke_at=min(record.revoke_at, now), next_attempt=0.0
            )
            return True

    async def abandon(self, lease_id: str, now: float, settle_until: float) -> None:
        async with self._lock:
            if lease_id not in self._rows and await self._reclaim(lease_id, now, settle_until):
                return
            await self._set(
                lease_id, "abandoning", revoke_at=now, next_attempt=0.0, settle_until=settle_until
            )

    async def recheck(self, lease_id: str, at: float) -> None:
        async with self._lock:
            await self._set(
                lease_id,
                "rechecking",
                revoke_at=at,
                next_attempt=0.0,
                settle_until=0.0,
                attempts=0,
                state="revoking",
            )

    async def revoking(self, lease_id: str) -> None:
        # Conditional like every write: a record taken over is not deleted by us.
        async with self._lock:
            await self._set(lease_id, "revoking", state="revoking")

    async def revoke_failed(
        self, lease_id: str, error: str, next_attempt: float, *, count: bool = True
    ) -> None:
        async with self._lock:
            record = self._rows.get(lease_id)
            if record is None:
                return
            await self._set(
                lease_id,
                "revoking",
                attempts=record.attempts + (1 if count else 0),
                last_error=error[:500],
                next_attempt=next_attempt,
            )

    async def forget(self, lease_id: str) -> bool:
        async with self._lock:
            if lease_id not in self._rows:
                return False
            self._store_check()
            removed = await self._store_delete(lease_id)
            self._rows.pop(lease_id, None)
            self._this_run.discard(lease_id)
            return removed

    async def recover(self, now: float) -> int:
        """Load the records, then make the half-done ones of an earlier run due now -
        not those of this run's issuances in flight."""
        await self._store_load()
        count = 0
        async with self._lock:
            for record in list(self._rows.values()):
                if record.lease_id in self._this_run:
                    continue
                if record.state in ("creating", "revoking"):
                    await self._set(
                        record.lease_id,
                        "recovering",
                        revoke_at=min(record.revoke_at, now),
                        next_attempt=0.0,
                    )
                    count += 1
        return count
