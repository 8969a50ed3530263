"""The fleet's timing on trio's mock clock, with an in-memory table that keeps
DynamoDB's conditional-write rules: heartbeats, a silent agent declared dead
after ``dead_after`` and not before, its records adopted with their announced
expiry, and a cut-off agent fenced when it comes back."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio
import trio.testing

from dyncreds.aws.fleet_table import AgentItem
from dyncreds.config import FleetSettings, Seconds
from dyncreds.fleet import Fleet
from dyncreds.journal import Record, TakenOver
from dyncreds.journal.dynamodb import DynamoDbJournal
from dyncreds.protocol import Upstream
from tests.fakes import WallClock

SETTINGS = FleetSettings(heartbeat=Seconds(10), dead_after=Seconds(60))


class Table:
    """One shared table; ``view(agent)`` is that agent's connection to it."""

    def __init__(self) -> None:
        self.agents: dict[str, AgentItem] = {}  # replaced whole on every write
        self.records: dict[tuple[str, str], tuple[Record, str]] = {}
        self.cut: set[str] = set()
        self.heartbeats: dict[str, int] = {}

    def view(self, me: str) -> View:
        return View(self, me)


class View:
    def __init__(self, table: Table, me: str):
        self.t, self.me = table, me

    def _check(self) -> None:
        if self.me in self.t.cut:
            raise Upstream("the fleet table cannot be used: ConnectionError", "ConnectionError")

    async def register(self, agent_id: str, host: str, pid: int, now: float) -> None:
        self._check()
        row = self.t.agents.get(agent_id) or AgentItem(
            agent_id, host, pid, now, now, 0, None, None, frozenset()
        )
        self.t.agents[agent_id] = dataclasses.replace(
            row, heartbeat=now, taken_by=None, taken_at=None
        )

    async def heartbeat(self, agent_id: str, now: float, leases: int) -> None:
        self._check()
        row = self.t.agents.get(agent_id)
        if row is None or row.taken_by is not None:
            raise TakenOver("ConditionalCheckFailed")
        self.t.agents[agent_id] = dataclasses.replace(row, heartbeat=now, leases=leases)
        self.t.heartbeats[agent_id] = self.t.heartbeats.get(agent_id, 0) + 1

    async def roster(self) -> list[Any]:
        self._check()
        return list(self.t.agents.values())

    async def claim(self, dead: Any, me: str, now: float) -> None:
        self._check()
        row = self.t.agents[dead.agent_id]
        if row.heartbeat != dead.heartbeat or row.taken_by is not None:
            raise TakenOver("ConditionalCheckFailed")
        self.t.agents[dead.agent_id] = dataclasses.replace(row, taken_by=me, taken_at=now)

    async def add_adopted(self, agent_id: str, origins: set[str]) -> None:
        self._check()
        row = self.t.agents[agent_id]
        self.t.agents[agent_id] = dataclasses.replace(row, adopted=row.adopted | origins)

    async def adopted(self, agent_id: str) -> set[str]:
        self._check()
        row = self.t.agents.get(agent_id)
        return set(row.adopted) if row else set()

    async def records(self, origin: str, owner: str) -> list[tuple[Record, str]]:
        self._check()
        return [
            (r, o) for (o, _), (r, who) in self.t.records.items() if o == origin and who == owner
        ]

    async def adopt(self, origin: str, lease_id: str, old_owner: str, new_owner: str) -> None:
        self._check()
        record, owner = self.t.records[(origin, lease_id)]
        if owner != old_owner:
            raise TakenOver("ConditionalCheckFailed")
        self.t.records[(origin, lease_id)] = (record, new_owner)

    async def all_records(self, limit: int = 1000) -> list[tuple[Record, str, str]]:
        return [(r, who, o) for (o, _), (r, who) in self.t.records.items()]

    async def put_new(self, record: Record, owner: str) -> None:
        self._check()
        self.t.records[(owner, record.lease_id)] = (record, owner)

    async def update(
        self, origin: str, lease_id: str, owner: str, changes: dict[str, Any], *, only_if: str = ""
    ) -> None:
        self._check()
        record, who = self.t.records.get((origin, lease_id), (None, None))
        if record is None or who != owner:
            raise TakenOver("ConditionalCheckFailed")
        self.t.records[(origin, lease_id)] = (dataclasses.replace(record, **changes), who)

    async def delete(self, origin: str, lease_id: str, owner: str) -> None:
        self._check()
        record, who = self.t.records.get((origin, lease_id), (None, None))
        if record is None or who != owner:
            raise TakenOver("ConditionalCheckFailed")
        del self.t.records[(origin, lease_id)]


def member(
    table: Table, agent_id: str, wall: WallClock
) -> tuple[Fleet, DynamoDbJournal, list[str]]:
    lost: list[str] = []
    view = table.view(agent_id)
    journal = DynamoDbJournal(view, agent_id, on_lost=lost.append)
    fleet = Fleet(SETTINGS, view, journal, agent_id, wall=wall, rng=lambda: 0.5)
    return fleet, journal, lost


async def test_heartbeats_and_a_silent_agent_is_taken_over_after_dead_after_not_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table, wall = Table(), WallClock()
    a, a_journal, _ = member(table, "a", wall)
    b, b_journal, _ = member(table, "b", wall)
    async with trio.open_nursery() as nursery:
        a_scope = trio.CancelScope()

        async def run_a() -> None:
            with a_scope:
                await a.run()

        nursery.start_soon(run_a)
        nursery.start_soon(b.run)
        await trio.sleep(1)
        await a_journal.creating("r/1", "r", "user-1", wall(), wall() + 3600)
        await a_journal.activate("r/1", wall() + 3600)
        announced = wall() + 3600
        await trio.sleep(100)
        assert 9 <= table.heartbeats["a"] <= 11  # every 10 s
        a_scope.cancel()  # a dies: no more heartbeats
        died = table.agents["a"].heartbeat
        while table.agents["a"].taken_by is None:  # noqa: ASYNC110 - polling the fake table
            await trio.sleep(1)
        taken = wall() - died
        # dead_after (60 s), plus at most one roster interval (15 s for 2 agents, x1.25 jitter)
        assert 60 <= taken <= 60 + 20, taken
        assert table.agents["a"].taken_by == "b"
        record = b_journal.get("r/1")
        assert record is not None and record.revoke_at == announced  # never earlier
        assert b.took_over[0]["agent"] == "a" and b.took_over[0]["records"] == 1
        status = await b.status()
        assert [x["alive"] for x in status["agents"]] == [False, True]
        nursery.cancel_scope.cancel()


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
        await a_journal.creating("r/1", "r", "user-1", wall(), wall() + 3600)
        await a_journal.activate("r/1", wall() + 3600)
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
