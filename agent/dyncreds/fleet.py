"""The fleet: heartbeats, the roster, and taking over the records of a dead peer.

Every ``heartbeat`` this agent writes its heartbeat item, on condition that no
peer has claimed it. A failed condition means a peer declared this agent dead
while it could not reach the table: the records that peer took are dropped
here (their leases stop being served) and the agent registers again.

Now and then (``check_every``: the fleet as a whole reads the roster about twice
per heartbeat, whatever its size) the agent reads the roster. An agent silent
for ``dead_after`` is claimed with a conditional write on the heartbeat it was
judged by - exactly one peer wins - and the winner adopts each of its records
with a conditional write on the old owner (the fencing token), then revokes
them as its own: at the expiry each announced, never earlier.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from dyncreds import leases, logs
from dyncreds.config import FleetSettings
from dyncreds.journal import Record, TakenOver
from dyncreds.journal.dynamodb import DynamoDbJournal
from dyncreds.protocol import DyncredsError, rfc3339

if TYPE_CHECKING:  # the fleet's shell never imports boto3
    from dyncreds.aws.fleet_table import AgentItem

log = logs.get("fleet")

ROSTER_READS_PER_HEARTBEAT = 2.0  # across the whole fleet


def check_every(heartbeat: float, fleet_size: int) -> float:
    return max(heartbeat, heartbeat * fleet_size / ROSTER_READS_PER_HEARTBEAT)


class FleetTableOps(Protocol):
    """The roster side of aws/fleet_table.FleetTable."""

    async def register(self, agent_id: str, host: str, pid: int, now: float) -> None: ...
    async def heartbeat(self, agent_id: str, now: float, leases: int) -> None: ...
    async def roster(self) -> list[AgentItem]: ...
    async def claim(self, dead: AgentItem, me: str, now: float) -> None: ...
    async def add_adopted(self, agent_id: str, origins: set[str]) -> None: ...
    async def adopted(self, agent_id: str) -> set[str]: ...
    async def records(self, origin: str, owner: str) -> list[tuple[Record, str]]: ...
    async def adopt(self, origin: str, lease_id: str, old_owner: str, new_owner: str) -> None: ...
    async def all_records(self, limit: int = 1000) -> list[tuple[Record, str, str]]: ...


class Fleet:
    def __init__(
        self,
        settings: FleetSettings,
        table: FleetTableOps,
        journal: DynamoDbJournal,
        agent_id: str,
        *,
        wall: Callable[[], float],
        poke_reaper: Callable[[], None] = lambda: None,
        rng: Callable[[], float] = random.random,
    ):
        self.settings = settings
        self.table = table
        self.journal = journal
        self.agent_id = agent_id
        self.wall = wall
        self.poke_reaper = poke_reaper
        self.rng = rng
        self.host = socket.gethostname().split(".")[0]
        self.reachable = True
        self.error: str | None = None
        self.last_heartbeat: float | None = None
        self.fleet_size = 1
        self.took_over: list[dict[str, Any]] = []  # agents whose records we adopted
        self.taken_from_us = 0  # times a peer took our records while we were cut off
        self.audit: Callable[..., None] = lambda op, outcome, **fields: None  # (daemon)

    @property
    def heartbeat_every(self) -> float:
        return float(self.settings.heartbeat)

    @property
    def dead_after(self) -> float:
        return float(self.settings.dead_after)

    def check_every(self) -> float:
        """Roster reads per agent shrink as the fleet grows - about two per heartbeat
        for the whole fleet, at random agents - so reading it costs the same at 10
        agents or 10,000 (each read is of the whole roster)."""
        return check_every(self.heartbeat_every, self.fleet_size)

    # ------------------------------------------------------------------ loops

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeats)
            nursery.start_soon(self._watch)

    async def _heartbeats(self) -> None:
        registered = False
        failures = 0
        while True:
            try:
                if not registered:
                    await self.table.register(self.agent_id, self.host, os.getpid(), self.wall())
                    registered = True
                await self.table.heartbeat(self.agent_id, self.wall(), self.journal.count())
                self._reached()
                failures = 0
            except TakenOver:
                await self._taken_over()
                registered = False
                continue
            except DyncredsError as exc:
                failures += 1
                self._unreached(exc)
            delay = self.heartbeat_every
            if failures:
                delay = min(delay, leases.backoff(failures, self.rng(), base=1.0, cap=delay))
            await trio.sleep(delay)

    async def _watch(self) -> None:
        await trio.sleep(self.heartbeat_every * (0.5 + self.rng()))
        while True:
            try:
                await self.check_peers()
            except DyncredsError as exc:
                log.warning("fleet.roster_failed", error=exc.message)
            await trio.sleep(self.check_every() * (0.75 + self.rng() / 2))

    def _reached(self) -> None:
        if not self.reachable:
            log.info("fleet.reachable", table=self.settings.table)
        self.reachable = True
        self.error = None
        self.last_heartbeat = self.wall()

    def _unreached(self, exc: DyncredsError) -> None:
        if self.reachable:
            log.error("fleet.unreachable", error=exc.message)
        self.reachable = False
        self.error = exc.message

    async def _taken_over(self) -> None:
        """A peer declared us dead: keep only what the table still says is ours."""
        before = {r.lease_id for r in self.journal.all()}
        try:
            origins = {self.agent_id} | await self.table.adopted(self.agent_id)
            still = set()
            for origin in origins:
                still |= {r.lease_id for r, _ in await self.table.records(origin, self.agent_id)}
        except DyncredsError as exc:
            self._unreached(exc)
            await trio.sleep(self.heartbeat_every)
            return
        self._reached()
        lost = sorted(before - still)
        for lease_id in lost:
            self.journal.drop(lease_id)
        self.taken_from_us += 1
        self.audit("fleet_taken_over", "ok", records=len(lost))
        log.warning(
            "fleet.taken_over",
            records=len(lost),
            note="a peer declared this agent dead while it was cut off; "
            "the leases it took are no longer served",
        )

    # ------------------------------------------------------------------ takeover

    async def check_peers(self) -> list[str]:
        """Read the roster; take over every dead agent we win. Their ids."""
        roster = await self.table.roster()
        self.fleet_size = max(1, len(roster))
        now = self.wall()
        won = []
        for peer in roster:
            if peer.agent_id == self.agent_id or peer.alive(now, self.dead_after):
                continue
            if peer.taken_by is not None:
                continue
            if await self.take_over(peer, now):
                won.append(peer.agent_id)
        return won

    async def take_over(self, peer: AgentItem, now: float) -> bool:
        try:
            await self.table.claim(peer, self.agent_id, now)
        except TakenOver:
            log.info("fleet.takeover_lost", agent=peer.agent_id)
            return False  # another peer was first, or it came back
        origins = {peer.agent_id} | set(peer.adopted)
        # Remember the origins first: if we die mid-way, our successor finds them.
        await self.table.add_adopted(self.agent_id, origins)
        adopted = []
        for origin in sorted(origins):
            for record, at in await self.table.records(origin, peer.agent_id):
                if record.thing == "root_key":
                    continue  # a root rotation belongs to that agent's own root
                try:
                    await self.table.adopt(at, record.lease_id, peer.agent_id, self.agent_id)
                except TakenOver:
                    continue
                adopted.append(self.journal.adopt(record, at, now))
        self.took_over.append(
            {"agent": peer.agent_id, "host": peer.host, "at": rfc3339(now), "records": len(adopted)}
        )
        self.audit("fleet_takeover", "ok", agent=peer.agent_id, records=len(adopted))
        log.warning(
            "fleet.takeover",
            agent=peer.agent_id,
            host=peer.host,
            records=len(adopted),
            silent_for=round(now - peer.heartbeat),
        )
        self.poke_reaper()
        return True

    # ------------------------------------------------------------------ views

    def view(self) -> dict[str, Any]:
        """This agent's side, for `status`."""
        return {
            "table": self.settings.table,
            "name": self.settings.name,
            "reachable": self.reachable,
            "error": self.error,
            "last_heartbeat": rfc3339(self.last_heartbeat) if self.last_heartbeat else None,
            "took_over": self.took_over[-20:],
            "taken_from_us": self.taken_from_us,
            "lost_leases": self.journal.lost[-20:],
        }

    async def status(self) -> dict[str, Any]:
        """The whole fleet, for `fleet status`: every agent and pending revocations."""
        return await fleet_view(self.table, self.settings, self.wall(), me=self.agent_id)


async def fleet_view(
    table: FleetTableOps, settings: FleetSettings, now: float, me: str | None
) -> dict[str, Any]:
    """The whole fleet as the table says: every agent and pending revocations. An
    agent asks it (``me``: itself), and so does `fleet status` from a machine with
    no agent of its own (``me`` None), with the root's or a profile's credentials."""
    dead_after = float(settings.dead_after)
    roster = await table.roster()
    records = await table.all_records()
    per_owner: dict[str, int] = {}
    for _, owner, _ in records:
        per_owner[owner] = per_owner.get(owner, 0) + 1
    agents = [
        {
            "id": peer.agent_id,
            "host": peer.host,
            "pid": peer.pid,
            "alive": peer.alive(now, dead_after),
            "last_heartbeat": rfc3339(peer.heartbeat),
            "silent_for": max(0, round(now - peer.heartbeat)),
            "leases": per_owner.get(peer.agent_id, 0),
            "taken_over_by": peer.taken_by,
            "records_taken_over": len(peer.adopted),
            "me": peer.agent_id == me,
        }
        for peer in sorted(roster, key=lambda p: p.agent_id)
    ]
    pending = [
        {
            "lease_id": record.lease_id,
            "role": record.role,
            "user": record.user_name,
            "owner": owner,
            "created_by": origin,
            "state": record.state,
            "revoke_at": rfc3339(record.revoke_at),
            "attempts": record.attempts,
            "last_error": record.last_error,
        }
        for record, owner, origin in sorted(records, key=lambda r: r[0].revoke_at)
    ]
    return {
        "table": settings.table,
        "name": settings.name,
        "dead_after": int(dead_after),
        "agents": agents,
        "pending": pending,
    }
