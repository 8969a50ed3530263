"""Fleet takeovers are audited, both ways: the agent that takes a dead peer's
records over, and the agent that learns, when it reaches the table again, that
its records were taken (on trio's mock clock, with test_fleet_timing's table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from tests.fakes import WallClock
from tests.test_fleet_timing import Table, member


async def test_a_takeover_is_recorded_by_both_agents(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table, wall = Table(), WallClock()
    records: dict[str, list[tuple[str, str, dict[str, Any]]]] = {"a": [], "b": []}

    def recorder(name: str) -> Callable[..., None]:
        return lambda op, outcome, **fields: records[name].append((op, outcome, fields))

    a, a_journal, _ = member(table, "a", wall, audit=recorder("a"))
    b, _, _ = member(table, "b", wall, audit=recorder("b"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await trio.sleep(1)
        await a_journal.creating("r/1", "r", "user-1", wall(), wall() + 3600)
        await a_journal.activate("r/1", wall() + 3600)
        table.cut.add("a")
        await trio.sleep(120)  # a is declared dead and taken over
        assert records["b"] == [("fleet_takeover", "ok", {"agent": "a", "records": 1})]
        table.cut.clear()
        await trio.sleep(15)
        assert records["a"] == [("fleet_taken_over", "ok", {"records": 1})]
        nursery.cancel_scope.cancel()
