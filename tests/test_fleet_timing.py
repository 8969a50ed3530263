"""The fleet's timing on trio's mock clock, with an in-memory table that keeps
DynamoDB's conditional-write rules: heartbeats, a silent agent declared dead
after ``dead_after`` on the observer's monotonic clock and not before (whatever
the wall clocks say), adopted records moved into the adopter's clock, an
interrupted takeover resumed, a copied identity refused, a paused agent that
checks before serving, and a cut-off agent fenced when it comes back."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from dyncreds.config import FleetSettings, Seconds
from dyncreds.fleet import Fleet
from dyncreds.fleetclock import SKEW_MARGIN
from dyncreds.fleetitems import AgentConflict, AgentItem, RecordMeta
from dyncreds.journal import Record, RecordGone, TakenOver
from dyncreds.journal.dynamodb import DynamoDbJournal
from dyncreds.protocol import Unavailable, Upstream, parse_rfc3339
from tests.fakes import MemoryTokens, WallClock

SETTINGS = FleetSettings(heartbeat=Seconds(10), dead_after=Seconds(60))
Held = tuple[Record, RecordMeta]


class Table:
    """One shared table; ``view(agent)`` is that agent's connection to it."""

    def __init__(self) -> None:
        self.agents: dict[str, AgentItem] = {}  # replaced whole on every write
        self.records: dict[tuple[str, str], Held] = {}
        self.cut: set[str] = set()
        self.heartbeats: dict[str, int] = {}
        self.beat_at: dict[str, float] = {}  # trio's clock at each agent's last heartbeat
        self.skews: dict[str, float] = {}
        # before an agent's adopt write: a test may stall or crash it there
        self.before_adopt: Callable[[str], Awaitable[None]] | None = None

    def view(self, me: str) -> View:
        return View(self, me)


class View:
    def __init__(self, table: Table, me: str):
        self.t, self.me = table, me
        self.bad: dict[str, str] = {}

    def _check(self) -> None:
        if self.me in self.t.cut:
            raise Upstream("the fleet table cannot be used: ConnectionError", "ConnectionError")

    def skew(self) -> float | None:
        return self.t.skews.get(self.me, 0.0)

    async def agent(self, agent_id: str) -> AgentItem | None:
        self._check()
        return self.t.agents.get(agent_id)

    async def register(self, me: AgentItem, accept: list[str], now: float) -> None:
        self._check()
        row = self.t.agents.get(me.agent_id)
        if row is not None and row.token and row.token not in [*accept, me.token]:
            raise AgentConflict(row)
        self.t.agents[me.agent_id] = msgspec.structs.replace(
            me,
            heartbeat=now,
            started_at=now,
            adopted=row.adopted if row else frozenset(),
        )

    async def heartbeat(self, me: AgentItem, now: float) -> None:
        self._check()
        row = self.t.agents.get(me.agent_id)
        if row is None:
            raise AgentConflict(None, missing=True)
        if row.token != me.token or row.taken_by is not None:
            raise AgentConflict(row)
        self.t.agents[me.agent_id] = msgspec.structs.replace(
            row, heartbeat=now, beat=me.beat, leases=me.leases, skew=me.skew
        )
        self.t.heartbeats[me.agent_id] = self.t.heartbeats.get(me.agent_id, 0) + 1
        self.t.beat_at[me.agent_id] = trio.current_time()

    async def roster(self) -> list[AgentItem]:
        self._check()
        return list(self.t.agents.values())

    async def claim(self, dead: AgentItem, me: str, now: float) -> None:
        self._check()
        row = self.t.agents[dead.agent_id]
        if row.pulse != dead.pulse or row.taken_by is not None:
            raise AgentConflict(row)
        self.t.agents[dead.agent_id] = msgspec.structs.replace(
            row, taken_by=me, taken_at=now, finished=False
        )

    async def inherit(self, claimed: AgentItem, me: str, now: float) -> None:
        self._check()
        row = self.t.agents[claimed.agent_id]
        if row.taken_by != claimed.taken_by or row.finished:
            raise AgentConflict(row)
        self.t.agents[claimed.agent_id] = msgspec.structs.replace(row, taken_by=me, taken_at=now)

    async def finish(self, dead: str, me: str) -> None:
        self._check()
        row = self.t.agents[dead]
        if row.taken_by != me:
            raise AgentConflict(row)
        self.t.agents[dead] = msgspec.structs.replace(row, finished=True)

    async def add_adopted(self, agent_id: str, origins: set[str]) -> None:
        self._check()
        row = self.t.agents[agent_id]
        self.t.agents[agent_id] = msgspec.structs.replace(row, adopted=row.adopted | origins)

    async def adopted(self, agent_id: str) -> set[str]:
        self._check()
        row = self.t.agents.get(agent_id)
        return set(row.adopted) if row else set()

    async def records(self, origin: str, owner: str) -> list[Held]:
        self._check()
        return [h for (o, _), h in self.t.records.items() if o == origin and h[1].owner == owner]

    async def exists(self, origin: str, lease_id: str) -> bool:
        self._check()
        return (origin, lease_id) in self.t.records

    async def adopt(
        self, held: Held, new_owner: str, changes_for: Callable[[Record], dict[str, Any]]
    ) -> Held | None:
        self._check()
        if self.t.before_adopt is not None:
            await self.t.before_adopt(self.me)
        key = (held[1].origin, held[0].lease_id)
        current = self.t.records.get(key)
        if current is None or current[1].owner != held[1].owner:
            return None
        record, meta = current  # as it is now: the version check, and a re-read
        adopted = dataclasses.replace(record, **changes_for(record))
        self.t.records[key] = (adopted, RecordMeta(new_owner, meta.origin, meta.version + 1))
        return self.t.records[key]

    async def all_records(self, limit: int = 1000) -> list[Held]:
        return list(self.t.records.values())

    async def put_new(self, record: Record, owner: str) -> None:
        self._check()
        if (owner, record.lease_id) in self.t.records:
            raise TakenOver("exists")
        self.t.records[(owner, record.lease_id)] = (record, RecordMeta(owner, owner, 1))

    async def update(self, origin: str, lease_id: str, owner: str, changes: dict[str, Any]) -> None:
        self._check()
        current = self.t.records.get((origin, lease_id))
        if current is None:
            raise RecordGone("gone")
        record, meta = current
        if meta.owner != owner:
            raise TakenOver("ConditionalCheckFailed")
        self.t.records[(origin, lease_id)] = (
            dataclasses.replace(record, **changes),
            msgspec.structs.replace(meta, version=meta.version + 1),
        )

    async def delete(self, origin: str, lease_id: str, owner: str) -> None:
        self._check()
        current = self.t.records.get((origin, lease_id))
        if current is None:
            return
        if current[1].owner != owner:
            raise TakenOver("ConditionalCheckFailed")
        del self.t.records[(origin, lease_id)]


def member(
    table: Table,
    agent_id: str,
    wall: Callable[[], float],
    tokens: MemoryTokens | None = None,
    audit: Callable[..., None] = lambda op, outcome, **fields: None,
) -> tuple[Fleet, DynamoDbJournal, list[str]]:
    lost: list[str] = []
    view = table.view(agent_id)
    journal = DynamoDbJournal(view, agent_id, on_lost=lost.append)
    tokens = tokens or MemoryTokens()
    fleet = Fleet(
        SETTINGS, view, journal, agent_id, wall=wall, rng=lambda: 0.5, tokens=tokens, audit=audit
    )
    return fleet, journal, lost


async def run_for(fleet: Fleet, nursery: trio.Nursery) -> trio.CancelScope:
    """Run one member until its scope is cancelled (it dies: no last word)."""
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await fleet.run()

    nursery.start_soon(run)
    return scope


async def served(journal: DynamoDbJournal, lease_id: str, now: float, ttl: float) -> float:
    await journal.creating(lease_id, "r", f"user-{lease_id}", now, now + ttl)
    await journal.activate(lease_id, now + ttl)
    return now + ttl


async def wait_until(condition: Callable[[], bool], limit: float = 3600) -> float:
    """Poll the fake table on the mock clock; how long it took."""
    start = trio.current_time()
    while not condition():
        if trio.current_time() - start > limit:
            raise AssertionError("condition not met on the mock clock")
        await trio.sleep(1)
    return trio.current_time() - start


async def test_heartbeats_and_a_silent_agent_is_taken_over_after_dead_after_not_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table, wall = Table(), WallClock()
    a, a_journal, _ = member(table, "a", wall)
    b, b_journal, _ = member(table, "b", wall)
    async with trio.open_nursery() as nursery:
        a_scope = await run_for(a, nursery)
        nursery.start_soon(b.run)
        await trio.sleep(1)
        announced = await served(a_journal, "r/1", wall(), 3600)
        await trio.sleep(100)
        assert 9 <= table.heartbeats["a"] <= 11  # every 10 s
        a_scope.cancel()  # a dies: no more heartbeats
        await wait_until(lambda: table.agents["a"].taken_by is not None)
        taken = trio.current_time() - table.beat_at["a"]
        # dead_after (60 s) on b's clock after b last saw a's pulse change, plus at
        # most one roster interval (15 s for 2 agents, x1.25 jitter) and one heartbeat
        assert 60 <= taken <= 60 + 20 + 10, taken
        assert table.agents["a"].taken_by == "b" and table.agents["a"].finished
        record = b_journal.get("r/1")
        # the same instant on the same clock, plus the margin for measuring skews
        assert record is not None and record.revoke_at == announced + SKEW_MARGIN
        assert b.took_over[0]["agent"] == "a" and b.took_over[0]["records"] == 1
        status = await b.status()
        assert [x["alive"] for x in status["agents"]] == [False, True]
        assert status["unfinished_takeovers"] == [] and status["bad_items"] == []
        nursery.cancel_scope.cancel()


async def test_liveness_never_compares_wall_clocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An agent 10 min ahead and one 10 min behind: nobody claims a live peer (the
    fast one used to claim both at once), and a dead one is claimed after
    dead_after, by whoever sees it - not sooner because its clock was behind,
    nor later because it was ahead."""
    table = Table()
    fast, slow, right = WallClock(1_800_000_600.0), WallClock(1_799_999_400.0), WallClock()
    a, _, _ = member(table, "a", fast)
    b, _, _ = member(table, "b", slow)
    c, _, _ = member(table, "c", right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        c_scope = await run_for(c, nursery)
        await trio.sleep(600)
        assert all(row.taken_by is None for row in table.agents.values())
        c_scope.cancel()
        await wait_until(lambda: table.agents["c"].taken_by is not None)
        taken = trio.current_time() - table.beat_at["c"]
        assert 60 <= taken <= 60 + 30, taken
        b_scope_died = table.agents["b"].beat
        await trio.sleep(1)
        assert table.agents["b"].beat >= b_scope_died  # b alive and never claimed
        assert table.agents["a"].taken_by is None and table.agents["b"].taken_by is None
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("owner_skew", "delay"), [(-30.0, 30.0 + SKEW_MARGIN), (30.0, 0.0)])
async def test_an_adopted_lease_is_revoked_at_its_instant_in_the_adopters_clock(
    autojump_clock: trio.testing.MockClock, owner_skew: float, delay: float
) -> None:
    """The owner's clients were told revoke_at on the owner's clock: 30 s behind
    AWS, that instant is 30 s later on a right clock - the adopter waits for it;
    30 s ahead, it is earlier - the adopter still never revokes before the value
    announced."""
    table = Table()
    table.skews = {"a": owner_skew, "b": 0.0}
    a_wall, b_wall = WallClock(1_800_000_000.0 + owner_skew), WallClock()
    a, a_journal, _ = member(table, "a", a_wall)
    b, b_journal, _ = member(table, "b", b_wall)
    async with trio.open_nursery() as nursery:
        a_scope = await run_for(a, nursery)
        nursery.start_soon(b.run)
        await trio.sleep(1)
        announced = await served(a_journal, "r/1", a_wall(), 3600)
        await trio.sleep(30)
        a_scope.cancel()
        await wait_until(lambda: b_journal.get("r/1") is not None)
        record = b_journal.get("r/1")
        assert record is not None and record.revoke_at == pytest.approx(announced + delay)
        held = table.records[("a", "r/1")]
        assert held[0].revoke_at == record.revoke_at and held[1].owner == "b"  # in the table too
        nursery.cancel_scope.cancel()


async def test_a_clock_beyond_the_limit_does_not_join_until_fixed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table, wall = Table(), WallClock()
    table.skews = {"a": 90.0}
    a, a_journal, _ = member(table, "a", wall)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        await trio.sleep(30)
        assert not a.registered and "a" not in table.agents
        assert "90s ahead of AWS's" in str(a.view()["error"])
        with pytest.raises(Unavailable, match="ahead of AWS"):
            await a_journal.creating("r/1", "r", "u", wall(), wall() + 60)
        table.skews = {"a": 3.0}  # NTP fixed it
        await wait_until(lambda: a.registered)
        await served(a_journal, "r/1", wall(), 60)
        assert a.view()["skew"] == 3.0
        nursery.cancel_scope.cancel()


async def test_an_interrupted_takeover_is_finished_by_whoever_inherits_the_claim(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """b claims dead a and dies at its first adopt write; a's records stay a's,
    and the takeover shows as unfinished; c takes b over and, inheriting b's
    claim on a, adopts a's records too."""
    table, wall = Table(), WallClock()
    a, a_journal, _ = member(table, "a", wall)
    b, _, _ = member(table, "b", wall)
    c, c_journal, _ = member(table, "c", wall)
    stalled = trio.Event()

    async def b_dies_adopting(me: str) -> None:
        if me == "b":
            stalled.set()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        a_scope = await run_for(a, nursery)
        b_scope = await run_for(b, nursery)
        await trio.sleep(1)
        announced = await served(a_journal, "r/1", wall(), 3600)
        await trio.sleep(20)
        table.before_adopt = b_dies_adopting
        a_scope.cancel()
        await stalled.wait()
        b_scope.cancel()  # killed at its first adopt write: a's item says taken_by b
        assert table.agents["a"].taken_by == "b" and not table.agents["a"].finished
        nursery.start_soon(c.run)
        await trio.sleep(5)
        status = await c.status()
        assert status["unfinished_takeovers"] == ["a"]
        await wait_until(lambda: c_journal.get("r/1") is not None, limit=300)
        record = c_journal.get("r/1")
        assert record is not None and record.revoke_at == announced + SKEW_MARGIN
        assert table.agents["a"].taken_by == "c" and table.agents["a"].finished
        assert table.agents["b"].taken_by == "c"
        assert (await c.status())["unfinished_takeovers"] == []
        nursery.cancel_scope.cancel()


async def test_a_record_that_fails_adoption_leaves_the_takeover_unfinished_then_resumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table, wall = Table(), WallClock()
    a, a_journal, _ = member(table, "a", wall)
    b, b_journal, _ = member(table, "b", wall)
    failures = [RuntimeError("boom")]

    async def fails_once(me: str) -> None:
        if failures:
            raise failures.pop()

    async with trio.open_nursery() as nursery:
        a_scope = await run_for(a, nursery)
        nursery.start_soon(b.run)
        await trio.sleep(1)
        await served(a_journal, "r/1", wall(), 3600)
        await served(a_journal, "r/2", wall(), 3600)
        table.before_adopt = fails_once
        a_scope.cancel()
        await wait_until(lambda: table.agents["a"].taken_by == "b")
        assert not table.agents["a"].finished  # one record failed: still b's to finish
        await wait_until(lambda: table.agents["a"].finished, limit=60)
        assert b_journal.get("r/1") is not None and b_journal.get("r/2") is not None
        nursery.cancel_scope.cancel()


async def test_an_adopted_creating_record_is_deleted_now_and_again_after_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """a stops right after journaling a user (it may only be paused: its
    CreateUser can still land): b deletes now, and once more after create_grace."""
    table, wall = Table(), WallClock()
    a, a_journal, _ = member(table, "a", wall)
    b, b_journal, _ = member(table, "b", wall)
    async with trio.open_nursery() as nursery:
        a_scope = await run_for(a, nursery)
        nursery.start_soon(b.run)
        await trio.sleep(1)
        await a_journal.creating("r/1", "r", "user-1", wall(), wall() + 3600)
        a_scope.cancel()
        await wait_until(lambda: b_journal.get("r/1") is not None)
        record = b_journal.get("r/1")
        assert record is not None and record.state == "creating"
        assert record.revoke_at == pytest.approx(wall(), abs=20)  # due now ...
        assert record.settle_until == pytest.approx(record.revoke_at + 300)  # ... and again
        nursery.cancel_scope.cancel()


async def test_an_agent_that_lost_an_issuing_record_journals_its_user_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Paused after journaling, a resumes after b took the record over: the
    issuance fails, and what a created is journaled again as a's own, due now."""
    table, wall = Table(), WallClock()
    a, a_journal, a_lost = member(table, "a", wall)
    await a.beat_once()  # joined
    await a_journal.creating("r/1", "r", "user-1", wall(), wall() + 3600)
    table.records[("a", "r/1")] = (table.records[("a", "r/1")][0], RecordMeta("b", "a", 2))
    with pytest.raises(TakenOver):
        await a_journal.key_created("r/1", "AKIA1")
    assert a_lost == ["r/1"]
    await a_journal.abandon("r/1", wall(), settle_until=wall() + 300)  # the issuer's failure path
    again = a_journal.get("r/1+reclaim")
    assert again is not None and again.user_name == "user-1" and again.revoke_at == wall()
    assert again.settle_until == wall() + 300 and a_journal.due(wall()) == [again]
    assert table.records[("a", "r/1+reclaim")][1].owner == "a"


async def test_a_copied_identity_is_refused_in_one_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Only agent-id copied: the copy sees a token it never used, watches the item
    for dead_after, sees it change, and stays out. agent-token copied too: the copy
    looks like a restart and registers; the first holder sees its token replaced at
    its next heartbeat and steps back. Either way one holder is left."""
    table, wall = Table(), WallClock()
    tokens = MemoryTokens()
    a, a_journal, _ = member(table, "x", wall, tokens)
    clone, clone_journal, _ = member(table, "x", wall, MemoryTokens())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        await trio.sleep(1)
        await served(a_journal, "r/1", wall(), 3600)
        nursery.start_soon(clone.run)
        await wait_until(lambda: clone.refused is not None, limit=120)
        assert "agent id x is in use by another agent" in str(clone.refused)
        assert "\n" not in str(clone.refused)
        with pytest.raises(Unavailable, match="in use by another agent"):
            await clone_journal.creating("r/2", "r", "u", wall(), wall() + 60)
        assert clone_journal.count() == 0 and a.refused is None
        assert a_journal.get("r/1") is not None

        copied = MemoryTokens()
        copied.save(tokens.load())  # the whole state dir copied, while a runs
        twin, _, _ = member(table, "x", wall, copied)
        nursery.start_soon(twin.run)
        await wait_until(lambda: a.refused is not None or twin.refused is not None, limit=60)
        assert sum(f.refused is None for f in (a, twin)) == 1
        assert any("fleet.identity_conflict" in r.getMessage() for r in caplog.records)
        nursery.cancel_scope.cancel()


async def test_a_paused_agent_checks_with_the_table_before_serving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """a stops (SIGSTOP) with a served lease; b takes it over; when a resumes, the
    first request after the gap waits for a check and the lease is not served."""
    table, wall = Table(), WallClock()
    a, a_journal, a_lost = member(table, "a", wall)
    b, _, _ = member(table, "b", wall)
    await a.beat_once()  # registered; then a is paused: no loop runs for it
    await served(a_journal, "r/1", wall(), 3600)
    await a.beat_once()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)
        await wait_until(lambda: table.agents["a"].taken_by == "b")
        nursery.cancel_scope.cancel()
    assert a_journal.get("r/1") is not None  # a knows nothing yet
    await a.ensure_current()  # a resumes: a request arrives
    assert a_lost == ["r/1"] and a_journal.get("r/1") is None and a.taken_from_us == 1
    checks = table.heartbeats["a"]
    await a.ensure_current()  # no gap now: no check
    assert table.heartbeats.get("a") == checks


async def test_a_delayed_creating_put_is_cleaned_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A PutItem(creating) that landed after its call was given up: the record is
    the agent's, but not in its memory. It is taken in and made due."""
    table, wall = Table(), WallClock()
    a, a_journal, _ = member(table, "a", wall)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(a_journal.recover, wall())  # as the agent does at start
        await trio.sleep(1)
        late = Record("r/late", "r", "user-late", None, "creating", wall(), wall() + 3600)
        table.records[("a", "r/late")] = (late, RecordMeta("a", "a", 1))
        await wait_until(lambda: a_journal.get("r/late") is not None, limit=120)
        record = a_journal.get("r/late")
        assert record is not None and record.revoke_at <= wall()
        nursery.cancel_scope.cancel()


async def test_a_deleted_item_is_said_as_such_not_as_a_takeover(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    table, wall = Table(), WallClock()
    a, a_journal, a_lost = member(table, "a", wall)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        await trio.sleep(1)
        await served(a_journal, "r/1", wall(), 3600)
        table.agents.clear()  # the table re-created (or emptied by hand)
        table.records.clear()
        await wait_until(lambda: "a" in table.agents and a_lost == ["r/1"], limit=60)
        assert a.taken_from_us == 0
        events = [r.getMessage() for r in caplog.records]
        assert "fleet.item_gone" in events and "fleet.taken_over" not in events
        nursery.cancel_scope.cancel()
    with pytest.raises(RecordGone):
        await member(table, "a", wall)[1].table.update("a", "r/9", "a", {"attempts": 1})


async def test_a_cut_off_agent_keeps_its_records_until_declared_dead_then_is_fenced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table, wall = Table(), WallClock()
    a, a_journal, a_lost = member(table, "a", wall)
    b, b_journal, _ = member(table, "b", wall)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await trio.sleep(1)
        await served(a_journal, "r/1", wall(), 3600)
        table.cut.add("a")
        await trio.sleep(30)  # shorter than dead_after: nothing happens
        assert a.reachable is False and "ConnectionError" in str(a.error)
        assert table.agents["a"].taken_by is None and a_journal.get("r/1") is not None
        with pytest.raises(Upstream):  # no new record while cut off
            await a_journal.creating("r/2", "r", "user-2", wall(), wall() + 3600)
        await trio.sleep(90)
        assert table.agents["a"].taken_by == "b" and b_journal.get("r/1") is not None
        assert a_journal.get("r/1") is not None  # a cannot know yet
        table.cut.clear()
        await trio.sleep(15)
        assert a_lost == ["r/1"] and a_journal.get("r/1") is None and a.taken_from_us == 1
        assert a.reachable and table.agents["a"].taken_by is None  # registered again
        await trio.sleep(300)
        assert table.agents["b"].taken_by is None  # b was never in doubt
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("scoped", [False, True])
async def test_the_orphan_sweep_goes_on_past_a_user_whose_record_a_peer_holds(
    autojump_clock: trio.testing.MockClock, scoped: bool
) -> None:
    """Two users carry a's tag and are unknown to a's journal: one's record was
    taken over by b (it still sits in a's partition, b's now), one's was lost.
    The first is not a's to take in - whether the fleet says so up front
    (``scope``) or the conditional PutItem does - and the sweep goes on to the
    second, revoked at the expiry its tag announced."""
    from collections import Counter

    from dyncreds.aws.iam_user import TaggedUser
    from dyncreds.reaper import Reaper, SweepSettings
    from tests.fakes import FakeBackend

    table, wall = Table(), WallClock()
    a, a_journal, _ = member(table, "a", wall)
    await a.beat_once()
    taken = Record("r/taken", "r", "user-taken", "AKIA1", "active", wall(), wall() + 600)
    table.records[("a", "r/taken")] = (taken, RecordMeta("b", "a", 3))
    expires = "2027-01-15T08:00:00Z"
    backend = FakeBackend(
        tagged=[
            TaggedUser(
                f"user-{x}",
                {"dyncreds:agent": "a", "dyncreds:lease": f"r/{x}", "dyncreds:expires": expires},
                wall() - 3600,
            )
            for x in ("taken", "lost")
        ]
    )
    reaper = Reaper(
        a_journal,
        backend,
        wall=wall,
        rng=lambda: 0.5,
        counters=Counter(),
        sweep=SweepSettings(),
        scope=a.sweep_scope() if scoped else None,
    )
    assert await reaper.sweep_orphans() == ["user-lost"]
    record = a_journal.get("r/lost")
    assert record is not None and record.revoke_at == parse_rfc3339(expires)
    assert table.records[("a", "r/taken")][1].owner == "b"  # untouched
