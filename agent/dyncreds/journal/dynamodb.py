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

What each write changes, and the missing-record rule, are rules.py's (the same
for every store); this module is the store's primitives - a conditional put,
update and delete, and the load - and what only a fleet has: ownership, the
reclaim, joining and refusal. A table that cannot be reached is an
``Upstream`` error naming DynamoDB's: no iam_user is created that no peer could
find. While the fleet refuses this agent (``refusal``: a clock too far off, its
id held by another agent) every write is refused with that reason; and the
records are loaded only once the agent has joined (``joined``), so that a second
holder of the same id never acts on the first one's records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from dyncreds import logs
from dyncreds.journal import Record, RecordGone, TakenOver
from dyncreds.journal.rules import Rules
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


class DynamoDbJournal(Rules):
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
        self.lost: list[str] = []  # records taken over from us, or gone (for status)
        self._dropped: dict[str, Record] = {}  # the last few, for ``abandon``
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

    def _store_check(self) -> None:
        if self.refusal is not None:
            raise Unavailable(f"the fleet journal refuses writes: {self.refusal}")

    async def _store_load(self) -> None:
        await self.load()

    async def _store_put(self, record: Record) -> None:
        if self.joined is not None and not self.joined.is_set():
            if isinstance(self.join_error, Upstream):  # why: the table cannot be used
                raise Upstream(self.join_error.message, aws_code=self.join_error.aws_code)
            raise Unavailable(
                "this agent has not joined the fleet yet (see `dyncreds status`); retry in a moment"
            )
        await self.table.put_new(record, self.agent_id)
        self._origin[record.lease_id] = self.agent_id

    async def _store_update(self, lease_id: str, changes: dict[str, Any]) -> None:
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

    async def _store_delete(self, lease_id: str) -> bool:
        origin = self._origin.get(lease_id, self.agent_id)
        try:
            await self.table.delete(origin, lease_id, self.agent_id)
        except TakenOver:
            self.drop(lease_id)
            return False
        self._origin.pop(lease_id, None)
        return True

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
        if self.joined is not None and not self.joined.is_set() and self.refusal is None:
            with trio.move_on_after(JOIN_WAIT):  # an agent just started: it is joining
                await self.joined.wait()
        await super().creating(
            lease_id, role, user_name, now, revoke_at, thing=thing, detail=detail
        )

    async def _reclaim(self, lease_id: str, now: float, settle_until: float) -> bool:
        """The record of an issuance in flight was lost (a peer took it over, or it
        is gone): what this agent just created is journaled again, as its own, to
        be deleted now and once more after the grace. The peer, if any, deletes it
        too; the second DeleteUser finds nothing."""
        lost = self._dropped.get(lease_id)
        if lost is None or lost.state != "creating":
            return False
        self._store_check()
        new_id = lost.lease_id.removesuffix(RECLAIM) + RECLAIM
        record = dataclasses.replace(
            lost,
            lease_id=new_id,
            state="revoking",
            revoke_at=now,
            next_attempt=0.0,
            attempts=0,
            settle_until=settle_until,
        )
        await self.table.put_new(record, self.agent_id)
        self._rows[new_id] = record
        self._origin[new_id] = self.agent_id
        self._dropped.pop(lost.lease_id, None)
        log.warning("lease.reclaimed", lease=lost.lease_id, user=lost.user_name, record=new_id)
        return True

    async def close(self) -> None:
        pass

    def close_now(self) -> None:
        pass
