"""Fixtures of the end-to-end tests: an agent whose AWS traffic goes through the
fault proxy (``rig``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess
from tests.e2e.fleetrig import FleetRig
from tests.faultproxy import FaultProxy


class Rig:
    """An agent whose AWS traffic goes through a fault proxy."""

    def __init__(
        self, aws: StandIn, base: Path, roles: dict[str, str], agent: str = "", tables: str = ""
    ):
        self.aws = aws
        self.proxy = FaultProxy(aws.endpoint, on_kill=self.kill).start()
        self.agent = AgentProcess(base, aws, roles, agent, tables)
        self._point_at_proxy()

    def _point_at_proxy(self) -> None:
        path = self.agent.config_dir / "config.toml"
        path.write_text(path.read_text().replace(self.aws.endpoint, self.proxy.endpoint))

    def start(self) -> AgentProcess:
        return self.agent.start()

    def kill(self) -> None:
        assert self.agent.process is not None
        self.agent.process.kill()

    def dead(self) -> bool:
        assert self.agent.process is not None
        return self.agent.process.poll() is not None

    def journal_rows(self) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.agent.state_dir / "journal.sqlite3")
        try:
            return list(db.execute("SELECT lease_id, state FROM leases"))
        finally:
            db.close()


@pytest.fixture
def rig(aws: StandIn, short_dir: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(roles: dict[str, str], agent: str = "", tables: str = "") -> Rig:
        """``tables``: more lines for [root] (it is the last table), then tables."""
        made = Rig(aws, short_dir, roles, agent, tables)
        rigs.append(made)
        return made

    yield make
    for made in rigs:
        if made.agent.process and made.agent.process.poll() is None:
            made.agent.stop()
        made.proxy.stop()


@pytest.fixture
def fleet(aws: StandIn, short_dir: Path) -> Iterator[FleetRig]:
    """A fleet's table and proxy; its agents made by ``fleet.agent(name)``."""
    made = FleetRig(aws, short_dir)
    try:
        yield made
    finally:
        made.stop()
