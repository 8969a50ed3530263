"""Which store holds the journal: the one place that chooses.

A third store (say PostgreSQL) is one module beside sqlite.py - a ``rules.Rules``
with the four primitives - and one line in ``STORES``, plus the setting that asks
for it in ``store_for`` (today the choice follows from ``[fleet]``: there is no
third store to name yet). The local SQLite journal
is opened in every case (statedir.py, which moves a corrupt file aside): it is
the store without [fleet], and joining a fleet requires it to track nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dyncreds import config
from dyncreds.journal import Journal


@dataclass(frozen=True)
class Places:
    """What a store may need to open."""

    local: Journal  # the state dir's SQLite journal, already open
    agent_id: str
    table: Any = None  # the fleet's table (aws/fleet_table.FleetTable), with [fleet]
    # The fleet's: a peer took this lease's record over (the agent stops serving it).
    on_lost: Callable[[str], None] = lambda lease_id: None


def _sqlite(places: Places) -> Journal:
    return places.local


def _dynamodb(places: Places) -> Journal:
    from dyncreds.journal.dynamodb import DynamoDbJournal

    assert places.table is not None, "[fleet] opens the fleet's table first"
    return DynamoDbJournal(places.table, places.agent_id, on_lost=places.on_lost)


STORES: dict[str, Callable[[Places], Journal]] = {
    "sqlite": _sqlite,
    "dynamodb": _dynamodb,
}


def store_for(cfg: config.Config) -> str:
    """The store the configuration asks for."""
    return "dynamodb" if cfg.main.fleet is not None else "sqlite"


def open(cfg: config.Config, places: Places) -> Journal:
    """The journal this configuration keeps its records in."""
    return STORES[store_for(cfg)](places)
