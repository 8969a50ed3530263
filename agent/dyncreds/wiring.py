"""The agent's parts, built in dependency order: the journal's store, the AWS
backend, the fleet, the agent (with its reaper and root keeper).

Every part gets what it uses in its constructor. Where two parts need each
other (a true cycle) the first is given a ``Later`` - a holder made before
both and bound once, right after the second part is built - and each such
place says why. The daemon (daemon.py) calls these between its own steps, so a
bad journal, root or socket still stops the start in that order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dyncreds import config, statedir
from dyncreds.agent import Agent
from dyncreds.audit import AuditLog
from dyncreds.journal.sqlite import SqliteJournal
from dyncreds.keeper import LateRootGate
from dyncreds.paths import Paths
from dyncreds.reaper import Reaper

if TYPE_CHECKING:
    from dyncreds.fleet import Fleet

T = TypeVar("T")


class StartupError(Exception):
    """Printed as one line; exit status 2."""


class Later(Generic[T]):
    """A part that is built after one that needs it: bound once, then used."""

    def __init__(self, what: str):
        self.what = what
        self._part: T | None = None

    def bind(self, part: T) -> None:
        assert self._part is None, f"{self.what} is bound twice"
        self._part = part

    def get(self) -> T:
        if self._part is None:  # nothing calls before the agent runs
            raise RuntimeError(f"{self.what} is not built yet")
        return self._part


@dataclass
class Cycles:
    """The parts that need each other, made before any of them."""

    # The AWS session asks the keeper whether the root may act before every call;
    # the keeper drives that session (unlock, lock, rotation).
    root_gate: LateRootGate = field(default_factory=LateRootGate)
    # The fleet's table signs with the backend's current root session; the backend
    # writes the journal, which is that table.
    backend: Later[Any] = field(default_factory=lambda: Later("the AWS backend"))
    # The fleet's journal tells the agent when a peer took a record over; the
    # agent is built on that journal.
    agent: Later[Agent] = field(default_factory=lambda: Later("the agent"))
    # The fleet's takeovers wake the reaper; the reaper's sweep is scoped by them.
    reaper: Later[Reaper] = field(default_factory=lambda: Later("the reaper"))


def open_journal(
    cfg: config.Config, local: SqliteJournal, ident: str, cycles: Cycles
) -> tuple[Any, Any]:
    """The journal the configuration asks for (journal/stores.py chooses), and
    with [fleet] the fleet's table. A local journal that still tracks users is
    not silently left behind: its records must be revoked first."""
    from dyncreds.journal import stores

    if cfg.main.fleet is None:
        return stores.open(cfg, stores.Places(local, ident)), None
    from dyncreds.aws.fleet_table import FleetTable

    if local.count():
        raise StartupError(
            f"the local journal still tracks {local.count()} IAM users or keys; run once "
            "without [fleet] until `dyncreds status` shows none retiring, then join the fleet"
        )
    local.close_now()
    table = FleetTable(cfg.main.fleet, lambda: cycles.backend.get().aws)
    places = stores.Places(
        local, ident, table, on_lost=lambda lease: cycles.agent.get().lost(lease)
    )
    return stores.open(cfg, places), table


def backend(
    cfg: config.Config,
    journal: Any,
    ident: str,
    paths: Paths,
    cycles: Cycles,
    factory: Callable[..., Any] | None = None,
) -> Any:
    """The AWS backend, with the store that seals static roles' keys at rest (a
    restart serves the same key); ``factory`` replaces it whole."""
    if factory is not None:
        made = factory(cfg, journal, ident)
    else:
        from dyncreds.aws.backend import AwsBackend
        from dyncreds.aws.staticstore import StaticStore

        sealed = StaticStore(paths.state_dir, cfg.main.root)
        made = AwsBackend(cfg, journal, ident, static_store=sealed, root_gate=cycles.root_gate)
    cycles.backend.bind(made)
    return made


def agent(
    cfg: config.Config,
    journal: Any,
    backend: Any,
    ident: str,
    paths: Paths,
    table: Any,
    audit_log: AuditLog,
    cycles: Cycles,
    on_status: Callable[[str], None],
) -> Agent:
    """The agent, wired at construction to the audit log, systemd's STATUS= and,
    with [fleet], the fleet it joins."""
    wall = time.time
    fleet = None
    if table is not None:
        fleet = _fleet(cfg, table, journal, ident, paths, wall, cycles, audit_log.record)
    made = Agent(
        cfg,
        journal,
        backend,
        ident,
        load_config=lambda: config.load(paths.config_dir),
        wall=wall,
        audit=audit_log.record,  # scheduled rotations
        on_status=on_status,
        root_gate=cycles.root_gate,
        fleet=fleet,
    )
    cycles.agent.bind(made)
    cycles.reaper.bind(made.reaper)
    return made


def _fleet(
    cfg: config.Config,
    table: Any,
    journal: Any,
    ident: str,
    paths: Paths,
    wall: Callable[[], float],
    cycles: Cycles,
    audit: Callable[..., None],
) -> Fleet:
    from dyncreds.fleet import Fleet

    assert cfg.main.fleet is not None
    return Fleet(
        cfg.main.fleet,
        table,
        journal,
        ident,
        wall=wall,
        poke_reaper=lambda: cycles.reaper.get().poke(),
        create_grace=float(cfg.main.agent.create_grace),
        tokens=statedir.TokenFile(paths.state_dir),
        sweep_soon=lambda: cycles.reaper.get().sweep_soon(),
        audit=audit,  # takeovers, both ways
    )


def audit_log(cfg: config.Config, paths: Paths) -> AuditLog:
    settings = cfg.main.audit
    return AuditLog(
        paths.state_dir / settings.file if settings.file else None,
        settings.max_size,
        required=settings.required,
    )
