"""The composition root: parts built in dependency order, each cycle broken by a
holder made first and bound once (wiring.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dyncreds import config, wiring
from dyncreds.journal.sqlite import SqliteJournal
from dyncreds.paths import Paths
from dyncreds.protocol import Locked, Unavailable
from tests.fakes import FakeBackend

MFA = '[root]\nmfa_serial = "arn:aws:iam::123456789012:mfa/admin"\n'


def test_a_later_part_is_bound_once_and_says_what_is_missing() -> None:
    later: wiring.Later[int] = wiring.Later("the answer")
    with pytest.raises(RuntimeError, match="the answer is not built yet"):
        later.get()
    later.bind(42)
    assert later.get() == 42
    with pytest.raises(AssertionError, match="bound twice"):
        later.bind(43)


def test_the_agent_is_built_with_its_cycles_bound(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(MFA)
    cfg = config.load(tmp_path)
    paths = Paths(tmp_path, tmp_path, tmp_path / "agent.sock")
    local = SqliteJournal(tmp_path / "journal.sqlite3")
    cycles = wiring.Cycles()
    journal, table = wiring.open_journal(cfg, local, "agent-a", cycles)
    assert journal is local and table is None  # no [fleet]
    backend = wiring.backend(
        cfg, journal, "agent-a", paths, cycles, lambda *_: FakeBackend(root_gate=cycles.root_gate)
    )
    # Before the agent exists the session's question has no one to answer it.
    with pytest.raises(Unavailable, match="not running yet"):
        backend.root_gate.may_act()
    agent = wiring.agent(
        cfg,
        journal,
        backend,
        "agent-a",
        paths,
        table,
        wiring.audit_log(cfg, paths),
        cycles,
        on_status=lambda summary: None,
    )
    assert cycles.agent.get() is agent and cycles.reaper.get() is agent.reaper
    assert cycles.backend.get() is backend and agent.fleet is None
    # The session asks the agent's keeper: locked until an unlock.
    assert cycles.root_gate.keeper is agent.root
    with pytest.raises(Locked, match="dyncreds unlock"):
        backend.root_gate.may_act()
    local.close_now()
