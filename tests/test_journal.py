"""The journal's contract, against the embedded implementation: written before
the AWS call, durable on return, reads from memory agree with the file, a lost
record is an error, and a 0.1 journal is upgraded in place."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dyncreds.journal import LostRecord, Record
from dyncreds.journal.sqlite import SqliteJournal


def reopen(path: Path) -> SqliteJournal:
    """What a restarted agent reads: the file, not the memory."""
    return SqliteJournal(path)


async def test_issuance_steps_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    await journal.creating("r/1", "r", "user-1", now=100, revoke_at=3700)
    assert reopen(path).get("r/1") == Record("r/1", "r", "user-1", None, "creating", 100, 3700)
    await journal.key_created("r/1", "AKIA1")
    await journal.activate("r/1", 3700)
    await journal.extend("r/1", 7300)
    on_disk = reopen(path).get("r/1")
    assert on_disk is not None and on_disk == journal.get("r/1")
    assert (on_disk.state, on_disk.access_key_id, on_disk.revoke_at) == ("active", "AKIA1", 7300)
    assert journal.due(7299) == [] and journal.next_due() == 7300
    assert await journal.revoke_now("r/1", 500)
    assert [r.lease_id for r in journal.due(500)] == ["r/1"]
    await journal.revoking("r/1")
    await journal.revoke_failed("r/1", "Throttling", next_attempt=600)
    assert journal.due(550) == [] and journal.next_due() == 600
    assert await journal.forget("r/1")
    assert reopen(path).count() == 0 and journal.count() == 0
    await journal.close()


async def test_recovery_makes_half_created_users_due(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    await journal.creating("r/1", "r", "half", now=100, revoke_at=3700)
    await journal.creating("r/2", "r", "served", now=100, revoke_at=3700)
    await journal.activate("r/2", 3700)
    restarted = reopen(path)
    assert await restarted.recover(now=200) == 1
    assert [r.user_name for r in restarted.due(200)] == ["half"]  # the served one waits
    assert restarted.user_names() == {"half", "served"}


@pytest.mark.parametrize(
    "write",
    [
        lambda j: j.activate("r/x", 10),
        lambda j: j.key_created("r/x", "AKIA"),
    ],
)
async def test_a_lost_record_is_an_error(
    tmp_path: Path, write: Callable[[SqliteJournal], Any]
) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    with pytest.raises(LostRecord):
        await write(journal)


async def test_abandoned_create_is_deleted_now_and_again_after_the_grace(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    await journal.creating("r/1", "r", "u", now=100, revoke_at=3700)
    await journal.abandon("r/1", now=104, settle_until=400)
    record = journal.get("r/1")
    assert record is not None and record.revoke_at == 104 and record.settle_until == 400
    await journal.recheck("r/1", 400)
    record = reopen(tmp_path / "j.sqlite3").get("r/1")
    assert record is not None and (record.revoke_at, record.settle_until) == (400, 0)


def test_a_journal_written_by_0_1_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE leases (lease_id TEXT PRIMARY KEY, role TEXT NOT NULL, "
        "user_name TEXT NOT NULL, access_key_id TEXT, state TEXT NOT NULL, "
        "created_at REAL NOT NULL, revoke_at REAL NOT NULL, attempts INTEGER NOT NULL "
        "DEFAULT 0, next_attempt REAL NOT NULL DEFAULT 0, last_error TEXT);"
        "INSERT INTO leases VALUES ('r/1', 'r', 'u', 'AKIA', 'active', 1, 2, 0, 0, NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
    db.commit()
    db.close()
    journal = SqliteJournal(path)
    record = journal.get("r/1")
    assert record is not None and record.settle_until == 0 and record.revoke_at == 2


async def test_a_failing_disk_is_an_error_the_agent_can_report(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    journal.close_now()  # any write now fails inside SQLite
    with pytest.raises(Exception, match="cannot be written"):
        await journal.creating("r/1", "r", "u", now=1, revoke_at=2)
