"""The fleet: joining, heartbeats, the roster, and taking over a dead peer.

**Joining.** The agent measures its clock against AWS's (fleetclock.py) and does
not join beyond ``SKEW_LIMIT``. Its id is random, kept in the state dir; each run
registers with a new start *token*, on condition that the item's token is one
this state dir used before (``TokenStore``). A token it never used means another
agent holds the id (a copied state dir, a cloned image): unless that item stays
unchanged for ``dead_after``, this agent is refused, in one line, and stays out.

**Heartbeats** bump a counter, on condition that the token is still ours and no
peer claimed us. A failed condition is read back and said as what it is: a peer
declared us dead (its records are dropped here: their leases stop being served,
and we register again), another process took our id (refused), or our item is
gone (deleted by hand, the table re-created: we register again).

**Takeover** (takeover.py). Now and then - the fleet as a whole reads the
roster about twice per heartbeat - the agent reads the roster and takes over
every peer whose pulse has not changed for ``dead_after`` on its own monotonic
clock.

**After a pause** (SIGSTOP, a frozen VM) longer than ``dead_after``/2, a request
for a fleet lease waits for a check with the table first (``ensure_current``):
a zombie does not serve what a peer took over meanwhile.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from dyncreds import leases, logs
from dyncreds.config import FleetSettings
from dyncreds.fleetclock import too_skewed
from dyncreds.fleetitems import AgentConflict, AgentItem
from dyncreds.fleetview import fleet_status
from dyncreds.journal.dynamodb import DynamoDbJournal
from dyncreds.protocol import DyncredsError, rfc3339
from dyncreds.takeover import FleetTableOps, Takeover

if TYPE_CHECKING:
    from collections.abc import Awaitable

log = logs.get("fleet")

ROSTER_READS_PER_HEARTBEAT = 2.0  # across the whole fleet
SERVE_CHECK_TIMEOUT = 2.0  # a paused agent checks at most this long before serving


def check_every(heartbeat: float, fleet_size: int) -> float:
    return max(heartbeat, heartbeat * fleet_size / ROSTER_READS_PER_HEARTBEAT)


class TokenStore(Protocol):
    """The start tokens this state dir registered with (statedir.TokenFile)."""

    where: str

    def load(self) -> list[str]: ...
    def save(self, tokens: list[str]) -> None: ...


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
        create_grace: float = 300.0,
        tokens: TokenStore,
        clock: Callable[[], float] = trio.current_time,
        sweep_soon: Callable[[], None] = lambda: None,
        audit: Callable[..., None] = lambda op, outcome, **fields: None,
    ):
        self.settings = settings
        self.table = table
        self.journal = journal
        self.agent_id = agent_id
        self.wall = wall
        self.clock = clock  # monotonic: liveness is judged on it, never on walls
        self.poke_reaper = poke_reaper
        self.rng = rng
        self.create_grace = create_grace
        self.tokens = tokens
        self.host = socket.gethostname().split(".")[0]
        self.token = secrets.token_hex(8)  # this run's
        self.beat = 0
        self.registered = False
        self.joined = journal.joined = trio.Event()
        self.refused: str | None = None  # for good: another agent holds this id
        self.reachable = True
        self.error: str | None = None
        self.last_heartbeat: float | None = None
        self.last_contact = -1e18  # monotonic, of the last heartbeat that landed
        self._check_again = -1e18
        self._checking: trio.Event | None = None
        self._reconciled = 0.0
        self._beat_lock = trio.Lock()
        self.takeover = Takeover(
            table,
            journal,
            agent_id,
            dead_after=self.dead_after,
            create_grace=create_grace,
            wall=wall,
            clock=clock,
            poke_reaper=poke_reaper,
            sweep_soon=sweep_soon,
            audit=audit,
        )
        self.taken_from_us = 0  # times a peer took our records while we were cut off

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
        return check_every(self.heartbeat_every, self.takeover.fleet_size)

    def _me(self) -> AgentItem:
        return AgentItem(
            agent_id=self.agent_id,
            host=self.host,
            pid=os.getpid(),
            beat=self.beat,
            token=self.token,
            skew=self.table.skew(),
            leases=self.journal.count(),
        )

    # ------------------------------------------------------------------ loops

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeats)
            nursery.start_soon(self._watch)

    async def _heartbeats(self) -> None:
        failures = 0
        while self.refused is None:
            try:
                await self.beat_once()
                failures = 0
            except DyncredsError as exc:
                failures += 1
                self._unreached(exc)
            except Exception as exc:  # a bug here must not end the agent
                failures += 1
                log.error("fleet.heartbeat_crashed", error=logs.said(exc))
            delay = self.heartbeat_every
            if failures:
                delay = min(delay, leases.backoff(failures, self.rng(), base=1.0, cap=delay))
            await trio.sleep(delay)

    async def _watch(self) -> None:
        await trio.sleep(self.heartbeat_every * (0.5 + self.rng()))
        while self.refused is None:
            await _guarded("fleet.roster_failed", self.check_peers)
            if self.registered and self.clock() - self._reconciled >= self.dead_after:
                self._reconciled = self.clock()
                await _guarded("fleet.reconcile_failed", self._reconcile)
            await trio.sleep(self.check_every() * (0.75 + self.rng() / 2))

    async def beat_once(self) -> None:
        async with self._beat_lock:
            if not self.registered:
                await self._register()
                return
            self.beat += 1
            try:
                await self.table.heartbeat(self._me(), self.wall())
            except AgentConflict as exc:
                await self._conflict(exc)
                if not self.registered and self.refused is None:
                    await self._register()  # at once: we are alive, and say so
                return
            self._reached()
            why = too_skewed(self.table.skew())
            if why and self.error != why:
                log.warning("fleet.clock_skew", error=why)

    async def ensure_current(self) -> None:
        """Before serving a fleet lease: after a gap longer than ``dead_after``/2 (a
        paused process, a frozen VM), check with the table first - a peer may have
        taken this agent over meanwhile. Cut off, it serves as before, and checks
        again at most once per heartbeat; requests meanwhile wait for that check."""
        now = self.clock()
        if self.refused or now - self.last_contact <= self.dead_after / 2:
            return
        if self._checking is not None:
            with trio.move_on_after(SERVE_CHECK_TIMEOUT):
                await self._checking.wait()
            return
        if now < self._check_again:
            return
        self._check_again = now + self.heartbeat_every
        self._checking = checking = trio.Event()
        if self.registered:  # not at start-up: there was no contact to have a gap from
            log.info("fleet.check_after_gap", gap=round(now - self.last_contact))
        try:
            with trio.move_on_after(SERVE_CHECK_TIMEOUT):
                await self.beat_once()
        except DyncredsError as exc:
            self._unreached(exc)
        finally:
            self._checking = None
            checking.set()

    def _reached(self) -> None:
        if not self.reachable:
            log.info("fleet.reachable", table=self.settings.table)
        self.reachable = True
        self.error = None
        self.last_heartbeat = self.wall()
        self.last_contact = self.clock()

    def _unreached(self, exc: DyncredsError) -> None:
        if self.reachable:
            log.error("fleet.unreachable", error=exc.message)
        self.reachable = False
        self.error = exc.message
        if not self.registered:
            self.journal.join_error = exc  # what a new issuance is told

    # ------------------------------------------------------------------ joining

    async def _register(self) -> None:
        current = await self.table.agent(self.agent_id)  # also a sample of AWS's clock
        why = too_skewed(self.table.skew())
        if why is not None:
            if self.journal.refusal != why:
                log.error("fleet.not_joining", error=why)
            self.journal.refusal = self.error = why
            return
        accept = self.tokens.load()
        if current is not None and current.token and current.token not in accept:
            if current.token != self.token and not await self._silent(current):
                self._refuse(current)
                return
            accept.append(current.token)  # its holder is gone: the id is free
        self.tokens.save([*accept[-3:], self.token])  # before the write that uses it
        try:
            await self.table.register(self._me(), accept, self.wall())
        except AgentConflict as exc:
            self._refuse(exc.current)
            return
        self.tokens.save([self.token])
        adopted = self.journal.origins() - {self.agent_id}
        if adopted:  # an item re-created (gone, or new) must still lead a successor there
            await self.table.add_adopted(self.agent_id, adopted)
        self.registered = True
        self.journal.refusal = None
        self.joined.set()
        self._reached()
        log.info("fleet.registered", agent=self.agent_id, skew=self.table.skew())

    async def _silent(self, item: AgentItem) -> bool:
        """Does this item stay unchanged for ``dead_after`` (or was it claimed)?"""
        log.warning("fleet.id_held", agent=item.agent_id, host=item.host, pid=item.pid)
        deadline = self.clock() + self.dead_after
        while item.taken_by is None:
            if self.clock() >= deadline:
                return True
            await trio.sleep(min(self.heartbeat_every, max(0.0, deadline - self.clock())))
            now = await self.table.agent(self.agent_id)
            if now is None:
                return True
            if now.pulse != item.pulse:
                return False
            item = now
        return True

    def _refuse(self, holder: AgentItem | None) -> None:
        who = f"host {holder.host}, pid {holder.pid}" if holder else "another process"
        self.refused = (
            f"agent id {self.agent_id} is in use by another agent ({who}): this state "
            f"directory was copied from it (a cloned image or container?); stop one, or "
            f"delete {self.tokens.where}/agent-id and restart this one to give it its own id"
        )
        self.registered = False
        self.journal.refusal = self.error = self.refused
        self.journal.forget_all()  # the other holder's to revoke, at their expiry
        self.joined.set()  # nothing is loaded: refused
        log.error("fleet.identity_conflict", error=self.refused)

    async def _conflict(self, exc: AgentConflict) -> None:
        """Our heartbeat's condition failed: say why, and act on it."""
        current = exc.current
        if current is None:
            if exc.missing:
                log.warning(
                    "fleet.item_gone",
                    note="this agent's item is gone from the fleet table (deleted by hand, "
                    "or the table was re-created): registering again",
                )
            else:  # logged as fleet.bad_item by the table
                log.warning("fleet.item_bad", note="registering again over it")
            self.registered = False
            await self._keep_only_ours("gone")
        elif current.taken_by is not None:
            await self._keep_only_ours("taken")
            self.registered = False
        elif current.token != self.token:
            self._refuse(current)
        else:  # ours, unclaimed: the write raced a change; the next heartbeat says
            log.info("fleet.heartbeat_raced", agent=self.agent_id)

    async def _keep_only_ours(self, why: str) -> None:
        """Keep only what the table still says is ours."""
        before = {r.lease_id for r in self.journal.all()}
        # What memory holds counts too: an item deleted by hand lost its `adopted`.
        origins = {self.agent_id} | self.journal.origins()
        origins |= await self.table.adopted(self.agent_id)
        still = set()
        for origin in origins:
            still |= {r.lease_id for r, _ in await self.table.records(origin, self.agent_id)}
        self._reached()
        lost = sorted(before - still)
        for lease_id in lost:
            self.journal.drop(lease_id)
        if why == "taken":
            self.taken_from_us += 1
            self.takeover.audit("fleet_taken_over", "ok", records=len(lost))
            log.warning(
                "fleet.taken_over",
                records=len(lost),
                note="a peer declared this agent dead while it was cut off or paused; "
                "the leases it took are no longer served",
            )
        elif lost:
            log.warning("fleet.records_gone", records=len(lost))

    async def _reconcile(self) -> None:
        found = await self.journal.reconcile(self.wall())
        if found:
            log.warning("fleet.stale_records", records=len(found), leases=",".join(found[:10]))
            self.poke_reaper()

    # ------------------------------------------------------------------ takeover

    async def check_peers(self) -> list[str]:
        if not self.registered:
            return []
        return await self.takeover.check()

    @property
    def took_over(self) -> list[dict[str, Any]]:
        return self.takeover.took_over

    def sweep_scope(self) -> Takeover:
        return self.takeover

    # ------------------------------------------------------------------ views

    def view(self) -> dict[str, Any]:
        """This agent's side, for `status`."""
        skew = self.table.skew()
        return {
            "table": self.settings.table,
            "name": self.settings.name,
            "joined": self.registered,
            "reachable": self.reachable,
            "error": self.refused or self.error,
            "refused": self.refused,
            "skew": skew,
            "skew_warning": too_skewed(skew),
            "last_heartbeat": rfc3339(self.last_heartbeat) if self.last_heartbeat else None,
            "took_over": self.took_over[-20:],
            "taken_from_us": self.taken_from_us,
            "lost_leases": self.journal.lost[-20:],
        }

    async def status(self) -> dict[str, Any]:
        """The whole fleet, for `fleet status`."""
        roster = await self.table.roster()
        records = await self.table.all_records()
        mono = self.clock()
        observer = self.takeover.observer
        for peer in roster:
            observer.observe(peer.agent_id, peer.pulse, mono)
        return fleet_status(
            self.settings,
            self.agent_id,
            roster,
            records,
            silent_for=lambda agent: observer.silent_for(agent, mono),
            bad=self.table.bad,
        )


async def fleet_view(
    table: FleetTableOps, settings: FleetSettings, now: float, me: str | None
) -> dict[str, Any]:
    """The whole fleet as the table says, for `fleet status` on a machine with no
    agent of its own (``me`` None), with the root's or a profile's credentials.
    With no agent's observations, silence is estimated on AWS's clock - each
    heartbeat's time less its agent's skew, against this machine's, also less its
    own - for display only: no agent claims a peer by it."""
    roster = await table.roster()
    records = await table.all_records()
    mine = table.skew() or 0.0
    by_id = {peer.agent_id: peer for peer in roster}

    def silent_for(agent_id: str) -> float:
        peer = by_id[agent_id]
        return max(0.0, (now - mine) - (peer.heartbeat - (peer.skew or 0.0)))

    return fleet_status(settings, me, roster, records, silent_for=silent_for, bad=table.bad)


async def _guarded(event: str, job: Callable[[], Awaitable[Any]]) -> None:
    """Run one round of a fleet loop: no exception ends the agent."""
    try:
        await job()
    except DyncredsError as exc:
        log.warning(event, error=exc.message)
    except Exception as exc:
        log.error(event, error=logs.said(exc))
