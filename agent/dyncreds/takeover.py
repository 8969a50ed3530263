"""Taking a dead peer over: judging who is dead, claiming it, adopting its records,
and finishing takeovers others left unfinished.

A peer whose pulse (start token, heartbeat counter) has not changed for
``dead_after`` on this agent's monotonic clock is claimed with a conditional
write on that pulse - exactly one peer wins - and the winner adopts each of its
records with a conditional write on the old owner and version (the fencing
token), moving each expiry into its own clock, never earlier (fleetclock.py).
A takeover is ``finished`` once all is adopted; until then whoever holds the
claim resumes it, and when the claimer itself dies, whoever takes the claimer
over inherits the claim. A record that fails to adopt does not stop the rest.

The adopter also sweeps the dead agent's tag (the orphan sweep's scope), for
users whose records were lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dyncreds import logs
from dyncreds.fleetclock import Observer, adopted_revoke_at
from dyncreds.fleetitems import AgentConflict, AgentItem, RecordMeta
from dyncreds.journal import ROOT_KEY, Record
from dyncreds.journal.dynamodb import DynamoDbJournal
from dyncreds.protocol import rfc3339

log = logs.get("fleet")

Held = tuple[Record, RecordMeta]


class FleetTableOps(Protocol):
    """The roster side of aws/fleet_table.FleetTable."""

    bad: dict[str, str]

    def skew(self) -> float | None: ...
    async def agent(self, agent_id: str) -> AgentItem | None: ...
    async def register(self, me: AgentItem, accept: list[str], now: float) -> None: ...
    async def heartbeat(self, me: AgentItem, now: float) -> None: ...
    async def roster(self) -> list[AgentItem]: ...
    async def claim(self, dead: AgentItem, me: str, now: float) -> None: ...
    async def inherit(self, claimed: AgentItem, me: str, now: float) -> None: ...
    async def finish(self, dead: str, me: str) -> None: ...
    async def add_adopted(self, agent_id: str, origins: set[str]) -> None: ...
    async def adopted(self, agent_id: str) -> set[str]: ...
    async def records(self, origin: str, owner: str) -> list[Held]: ...
    async def exists(self, origin: str, lease_id: str) -> bool: ...
    async def adopt(
        self, held: Held, new_owner: str, changes_for: Callable[[Record], dict[str, Any]]
    ) -> Held | None: ...
    async def all_records(self, limit: int = 1000) -> list[Held]: ...


class Takeover:
    def __init__(
        self,
        table: FleetTableOps,
        journal: DynamoDbJournal,
        agent_id: str,
        *,
        dead_after: float,
        create_grace: float,
        wall: Callable[[], float],
        clock: Callable[[], float],
        poke_reaper: Callable[[], None],
        sweep_soon: Callable[[], None] = lambda: None,
        audit: Callable[..., None] = lambda op, outcome, **fields: None,
    ):
        self.table = table
        self.journal = journal
        self.agent_id = agent_id
        self.dead_after = dead_after
        self.create_grace = create_grace
        self.wall = wall
        self.clock = clock  # monotonic: liveness is judged on it, never on walls
        self.poke_reaper = poke_reaper
        self.sweep_soon = sweep_soon  # the dead agent's tag: users whose records were lost
        self.observer = Observer()
        self.fleet_size = 1
        self.swept: set[str] = set()  # dead agents taken over by us: we sweep their tags
        self.skews: dict[str, float | None] = {}  # each peer's, as it last said
        self.took_over: list[dict[str, Any]] = []  # agents whose records we adopted
        self.audit = audit  # (Fleet's)

    async def check(self) -> list[str]:
        """Read the roster; take over every dead agent we win, and finish every
        takeover left unfinished by us or by a claimer that died. Their ids."""
        roster = await self.table.roster()
        mono, now = self.clock(), self.wall()
        self._learn(roster, mono)
        won: list[str] = []
        for peer in roster:
            if peer.agent_id == self.agent_id or peer.taken_by is not None:
                continue
            dead = self.observer.dead(peer.agent_id, mono, self.dead_after)
            if dead and await self.take_over(peer, now):
                won.append(peer.agent_id)
        by_id = {p.agent_id: p for p in roster}
        for peer in roster:
            claimer = peer.taken_by
            if claimer is None or peer.finished or peer.agent_id == self.agent_id:
                continue
            if claimer == self.agent_id:
                await self._adopt_all(peer, now, resumed=True)
            elif (claimer in won or self._gone(by_id.get(claimer), mono)) and await self._inherit(
                peer, now
            ):
                won.append(peer.agent_id)
        return won

    def _learn(self, roster: list[AgentItem], mono: float) -> None:
        """What a roster read tells: pulses, skews, whose tags we sweep."""
        for peer in roster:
            self.observer.observe(peer.agent_id, peer.pulse, mono)
        self.observer.forget_others({p.agent_id for p in roster})
        self.fleet_size = max(1, len(roster))
        self.skews = {p.agent_id: p.skew for p in roster}
        taken = {p.agent_id for p in roster if p.taken_by is not None}
        self.swept = set()
        for peer in roster:
            if peer.taken_by == self.agent_id:
                self.swept |= {peer.agent_id} | (peer.adopted & taken)

    async def _inherit(self, peer: AgentItem, now: float) -> bool:
        """Its claimer died before finishing: the claim, and the rest, are ours."""
        try:
            await self.table.inherit(peer, self.agent_id, now)
        except AgentConflict:
            return False
        log.warning("fleet.takeover_inherited", agent=peer.agent_id, claimer=peer.taken_by)
        await self._adopt_all(peer, now, resumed=True)
        return True

    def _gone(self, claimer: AgentItem | None, mono: float) -> bool:
        if claimer is None or claimer.taken_by is not None:
            return True
        return self.observer.dead(claimer.agent_id, mono, self.dead_after)

    async def take_over(self, peer: AgentItem, now: float) -> bool:
        try:
            await self.table.claim(peer, self.agent_id, now)
        except AgentConflict:
            log.info("fleet.takeover_lost", agent=peer.agent_id)
            return False  # another peer was first, or it came back
        await self._adopt_all(peer, now)
        return True

    async def _adopt_all(self, peer: AgentItem, now: float, *, resumed: bool = False) -> None:
        origins = {peer.agent_id} | set(peer.adopted)
        # Remember the origins first: if we die mid-way, our successor finds them.
        await self.table.add_adopted(self.agent_id, origins)
        self.swept.add(peer.agent_id)
        adopted, failed = 0, 0
        for origin in sorted(origins):
            for held in await self.table.records(origin, peer.agent_id):
                if held[0].thing == ROOT_KEY:
                    continue  # a root rotation belongs to that agent's own root
                try:
                    result = await self.table.adopt(
                        held, self.agent_id, lambda r: self._adopt_changes(r, peer, now)
                    )
                except Exception as exc:  # one record must not stop the rest
                    failed += 1
                    log.error("fleet.adopt_failed", lease=held[0].lease_id, error=logs.said(exc))
                    continue
                if result is not None:
                    self.journal.adopted(result[0], result[1].origin)
                    adopted += 1
        if not failed:
            try:
                await self.table.finish(peer.agent_id, self.agent_id)
            except AgentConflict:
                pass  # it came back, or another peer holds the claim now
        self.took_over.append(
            {"agent": peer.agent_id, "host": peer.host, "at": rfc3339(now), "records": adopted}
        )
        self.audit("fleet_takeover", "ok", agent=peer.agent_id, records=adopted)
        log.warning(
            "fleet.takeover",
            agent=peer.agent_id,
            host=peer.host,
            records=adopted,
            resumed=resumed,
            unfinished=failed,
            silent_for=round(self.observer.silent_for(peer.agent_id, self.clock())),
        )
        self.poke_reaper()
        if not resumed:
            self.sweep_soon()

    def _adopt_changes(self, record: Record, peer: AgentItem, now: float) -> dict[str, Any]:
        """A record's times once ours: a half-created user is deleted now and again
        after ``create_grace`` (its CreateUser may still land: its agent may only be
        paused); a half-revoked one now (and at its planned recheck); a served one
        at the instant it announced, in our clock, never earlier."""
        fresh: dict[str, Any] = {"next_attempt": 0.0, "attempts": 0}
        if record.state == "creating":
            return fresh | {"revoke_at": now, "settle_until": now + self.create_grace}
        if record.state == "revoking":
            recheck = record.revoke_at if record.revoke_at > now else record.settle_until
            return fresh | {"revoke_at": now, "settle_until": recheck}
        at = adopted_revoke_at(record.revoke_at, peer.skew, self.table.skew())
        return fresh | {"revoke_at": at}

    # ------------------------------------------------------------------ the orphan sweep's view
    # (reaper.SweepScope): whose tags this agent sweeps, and on which clock

    def agents(self) -> set[str]:
        return {self.agent_id} | self.swept

    async def tracked(self, agent: str, lease_id: str) -> bool:
        return await self.table.exists(agent, lease_id)

    def revoke_at(self, agent: str, announced: float) -> float:
        if agent == self.agent_id:
            return announced
        return adopted_revoke_at(announced, self.skews.get(agent), self.table.skew())
