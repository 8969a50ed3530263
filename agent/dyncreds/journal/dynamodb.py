"""The fleet journal: the same records, in the fleet's DynamoDB table.

The table (aws/fleet_table.py) is the source of truth; this agent keeps an
in-memory copy of the records it *owns*, so reads are instant as with SQLite.
Every write is conditional on the record still being ours. When it is not - a
peer declared this agent dead while it was cut off and took the record over -
the record leaves memory, ``on_lost`` tells the agent (which stops serving that
lease: its clients get a replacement), and the write raises ``TakenOver``.

A record that is *gone* from the table (deleted by hand, the table re-created)
is dropped the same way, and said so (``RecordGone``). An issuance whose record
was lost mid-way does not leave its user behind: ``abandon`` journals the user
again, under a new record of this agent's, for the reaper to delete.

Writes are serialized (one trio.Lock) so that memory follows the table in order,
as in sqlite.py. A table that cannot be reached is an ``Upstream`` error naming
DynamoDB's: no iam_user is created that no peer could find. While the fleet
refuses this agent (``refusal``: a clock too far off, its id held by another
agent) every write is refused with that reason; and the records are loaded
only once the agent has joined (``joined``), so that a second holder of the
same id never acts on the first one's records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from dyncreds import logs
from dyncreds.journal import LostRecord, MemoryRows, Record, RecordGone, TakenOver
from dyncreds.protocol import Unavailable, Upstream

log = logs.get("journal")

JOIN_WAIT = 5.0  # a new record waits this long for the agent to join the fleet
RECLAIM = "+reclaim"  # suffix of a record that journals a user again after its record was lost


class Placed(Protocol):
    """Where a record lives (fleetitems.RecordMeta)."""

    @property
    def origin(self) -> str: ...


class RecordTable(Protocol):
    """What the journal needs of the table (aws/fleet_table.FleetTable)."""

    async def put_new(self, record: Record, owner: str) -> None: ...
    async def update(
        self, origin: str, lease_id: str, owner: str, changes: dict[str, Any]
    ) -> None: ...
    async def delete(self, origin: str, lease_id: str, owner: str) -> None: ...
    async def records(self, origin: str, owner: str) -> Sequence[tuple[Record, Placed]]: ...
    async def adopted(self, agent_id: str) -> set[str]: ...


class DynamoDbJournal(MemoryRows):
    def __init__(
        self,
        table: RecordTable,
        agent_id: str,
        *,
        on_lost: Callable[[str], None] = lambda lease_id: None,
        joined: trio.Event | None = None,
    ):
        super().__init__()
        self.table = table
        self.agent_id = agent_id
        self.on_lost = on_lost
        self.joined = joined  # set by the fleet once registered (None: no wait)
        self.refusal: str | None = None  # set by the fleet while it refuses this agent
        self.join_error: Exception | None = None  # why the fleet could not join yet
        self._origin: dict[str, str] = {}  # lease id -> the partition it lives in
        self._lock = trio.Lock()
        self.lost: list[str] = []  # records taken over from us, or gone (for status)
        self._dropped: dict[str, Record] = {}  # the last few, for ``abandon``
        self._this_run: set[str] = set()  # created by this process (recovery skips them)
        self.loaded = False

    # ---------------------------------------------------------------- loading

    async def load(self) -> list[str]:
        """This agent's records from the table: its own partition and those it
        adopted, once it has joined the fleet. Writes wait meanwhile; a record
        this run already holds (an issuance that went first) is not overwritten
        by the snapshot. The ids loaded."""
        if self.joined is not None:
            await self.joined.wait()
        loaded = []
        async with self._lock:
            origins = {self.agent_id} | await self.table.adopted(self.agent_id)
            for origin in sorted(origins):
                for record, meta in await self.table.records(origin, self.agent_id):
                    if record.lease_id in self._rows:
                        continue
                    self._rows[record.lease_id] = record
                    self._origin[record.lease_id] = meta.origin
                    loaded.append(record.lease_id)
            self.loaded = True
            return loaded

    def adopted(self, record: Record, origin: str) -> None:
        """A record taken over from a dead peer: already ours in the table, as it
        is here (fleet.py decided its times)."""
        self._rows[record.lease_id] = record
        self._origin[record.lease_id] = origin

    def origins(self) -> set[str]:
        """The partitions of the records held here (this agent's, and adopted ones)."""
        return set(self._origin.values())

    def drop(self, lease_id: str) -> None:
        """No longer ours: forget it here (the table says who owns it now)."""
        record = self._rows.pop(lease_id, None)
        if record is not None:
            self._origin.pop(lease_id, None)
            self.lost.append(lease_id)
            self._dropped[lease_id] = record
            while len(self._dropped) > 100:
                self._dropped.pop(next(iter(self._dropped)))
            self.on_lost(lease_id)

    def forget_all(self) -> None:
        """The fleet refuses this agent: what memory holds is not ours to act on."""
        self._rows.clear()
        self._origin.clear()

    async def reconcile(self, now: float) -> list[str]:
        """Records of this agent's own partition that memory does not know - a
        ``creating`` PutItem that landed after its call was given up - are taken
        in and made due (nothing was served from them). Their lease ids."""
        found: list[str] = []
        if not self.loaded:
            return found  # the load takes in what is there; it has not run yet
        async with self._lock:
            for record, meta in await self.table.records(self.agent_id, self.agent_id):
                if record.lease_id in self._rows or meta.origin != self.agent_id:
                    continue
                self._rows[record.lease_id] = record
                self._origin[record.lease_id] = meta.origin
                if record.state != "active":
                    await self._set(
                        record.lease_id,
                        "reconciling",
                        revoke_at=min(record.revoke_at, now),
                        next_attempt=0.0,
                    )
                found.append(record.lease_id)
        return found

    # ---------------------------------------------------------------- writes

    def _refuse(self) -> None:
        if self.refusal is not None:
            raise Unavailable(f"the fleet journal refuses writes: {self.refusal}")

    async def _set(self, lease_id: str, what: str, **changes: Any) -> None:
        self._refuse()
        record = self._rows.get(lease_id)
        if record is None:
            raise LostRecord(f"journal record {lease_id} vanished while {what}")
        origin = self._origin.get(lease_id, self.agent_id)
        try:
            await self.table.update(origin, lease_id, self.agent_id, changes)
        except RecordGone as exc:
            self.drop(lease_id)
            log.warning("fleet.record_gone", lease=lease_id, error=exc.message)
            raise RecordGone(f"{exc.message}; its clients get a new lease") from None
        except TakenOver:
            self.drop(lease_id)
            raise TakenOver(
                f"lease {lease_id} was taken over by a peer of the fleet while this agent "
                "was cut off; its clients get a new lease"
            ) from None
        current = self._rows.get(lease_id)
        if current is not None:
            self._rows[lease_id] = dataclasses.replace(current, **changes)

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
        if self.joined is not None and not self.joined.is_set() and self.refusal is None:
            with trio.move_on_after(JOIN_WAIT):  # an agent just started: it is joining
                await self.joined.wait()
        async with self._lock:
            self._refuse()
            if self.joined is not None and not self.joined.is_set():
                if isinstance(self.join_error, Upstream):  # why: the table cannot be used
                    raise Upstream(self.join_error.message, aws_code=self.join_error.aws_code)
                raise Unavailable(
                    "this agent has not joined the fleet yet (see `dyncreds status`); "
                    "retry in a moment"
                )
            await self.table.put_new(record, self.agent_id)
            self._rows[lease_id] = record
            self._origin[lease_id] = self.agent_id
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
            lost = self._dropped.get(lease_id) if lease_id not in self._rows else None
            if lost is not None and lost.state == "creating":
                await self._reclaim(lost, now, settle_until)
                return
            await self._set(
                lease_id, "abandoning", revoke_at=now, next_attempt=0.0, settle_until=settle_until
            )

    async def _reclaim(self, lost: Record, now: float, settle_until: float) -> None:
        """The record of an issuance in flight was lost (a peer took it over, or it
        is gone): what this agent just created is journaled again, as its own, to
        be deleted now and once more after the grace. The peer, if any, deletes it
        too; the second DeleteUser finds nothing."""
        self._refuse()
        lease_id = lost.lease_id.removesuffix(RECLAIM) + RECLAIM
        record = dataclasses.replace(
            lost,
            lease_id=lease_id,
            state="revoking",
            revoke_at=now,
            next_attempt=0.0,
            attempts=0,
            settle_until=settle_until,
        )
        await self.table.put_new(record, self.agent_id)
        self._rows[lease_id] = record
        self._origin[lease_id] = self.agent_id
        self._dropped.pop(lost.lease_id, None)
        log.warning("lease.reclaimed", lease=lost.lease_id, user=lost.user_name, record=lease_id)

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
            self._refuse()
            origin = self._origin.get(lease_id, self.agent_id)
            try:
                await self.table.delete(origin, lease_id, self.agent_id)
            except TakenOver:
                self.drop(lease_id)
                return False
            self._rows.pop(lease_id, None)
            self._origin.pop(lease_id, None)
            self._this_run.discard(lease_id)
            return True

    async def recover(self, now: float) -> int:
        """Load this agent's records, then make the half-done ones of an earlier
        run due now - not those of this run's issuances in flight (a request can
        come before the agent has joined and loaded)."""
        await self.load()
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

    async def close(self) -> None:
        pass

    def close_now(self) -> None:
        pass
