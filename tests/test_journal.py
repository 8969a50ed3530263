"""The journal's contract, one suite for both implementations - SQLite (the
embedded default) and DynamoDB (the fleet's table, on moto's server): written
before the AWS call, durable on return, reads from memory agree with storage, a
lost record is an error. Then what only one of them has: a 0.1 SQLite journal is
refused with what to do; a fleet record taken over by a peer is fenced off."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dyncreds import statedir
from dyncreds.aws.standin import StandIn
from dyncreds.journal import LostRecord, Record, TakenOver
from dyncreds.journal.sqlite import OldJournal, SqliteJournal


@dataclass
class Store:
    """Opens a journal, and reopens it as a restarted agent would (from storage)."""

    open: Callable[[], Any]
    reopen: Callable[[], Awaitable[Any]]
    remove_behind: Callable[[str], Awaitable[None]]  # another hand deletes a record


def fleet_table(base: Path, aws: StandIn) -> Any:
    return aws.fleet_table(base, table="journal-contract", name="t")


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.e2e)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "j.sqlite3"

        async def reopen_sqlite() -> SqliteJournal:
            return SqliteJournal(path)

        async def remove_sqlite(lease_id: str) -> None:
            with sqlite3.connect(path) as db:
                db.execute("DELETE FROM leases WHERE lease_id = ?", (lease_id,))

        yield Store(lambda: SqliteJournal(path), reopen_sqlite, remove_sqlite)
        return
    from dyncreds.journal.dynamodb import DynamoDbJournal

    aws = request.getfixturevalue("aws")
    table = fleet_table(tmp_path, aws)

    async def reopen_dynamodb() -> DynamoDbJournal:
        journal = DynamoDbJournal(table, "agent-a")
        await journal.load()
        return journal

    async def remove_dynamodb(lease_id: str) -> None:
        await table.delete("agent-a", lease_id, "agent-a")

    yield Store(lambda: DynamoDbJournal(table, "agent-a"), reopen_dynamodb, remove_dynamodb)


async def test_issuance_steps_are_durable(store: Store) -> None:
    journal = store.open()
    await journal.creating("r/1", "r", "user-1", now=100, revoke_at=3700)
    assert (await store.reopen()).get("r/1") == Record(
        "r/1", "r", "user-1", None, "creating", 100, 3700
    )
    await journal.key_created("r/1", "AKIA1")
    await journal.activate("r/1", 3700)
    await journal.extend("r/1", 7300)
    on_disk = (await store.reopen()).get("r/1")
    assert on_disk is not None and on_disk == journal.get("r/1")
    assert (on_disk.state, on_disk.access_key_id, on_disk.revoke_at) == ("active", "AKIA1", 7300)
    assert journal.due(7299) == [] and journal.next_due() == 7300
    assert await journal.revoke_now("r/1", 500)
    assert [r.lease_id for r in journal.due(500)] == ["r/1"]
    await journal.revoking("r/1")
    await journal.revoke_failed("r/1", "Throttling", next_attempt=600)
    assert journal.due(550) == [] and journal.next_due() == 600
    assert await journal.forget("r/1")
    assert (await store.reopen()).count() == 0 and journal.count() == 0
    await journal.close()


async def test_recovery_makes_half_created_users_due(store: Store) -> None:
    journal = store.open()
    await journal.creating("r/1", "r", "half", now=100, revoke_at=3700)
    await journal.creating("r/2", "r", "served", now=100, revoke_at=3700)
    await journal.activate("r/2", 3700)
    restarted = await store.reopen()
    assert await restarted.recover(now=200) == 1
    assert [r.user_name for r in restarted.due(200)] == ["half"]  # the served one waits
    assert restarted.user_names() == {"half", "served"}


# Every write, on a record that exists (memory and storage agree after each) and
# on one that does not (the rule: an error where the write must touch its record).
WRITES: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "key_created": lambda j: j.key_created("r/1", "AKIA1"),
    "activate": lambda j: j.activate("r/1", 3700),
    "extend": lambda j: j.extend("r/1", 7300),
    "revoke_now": lambda j: j.revoke_now("r/1", 500),
    "abandon": lambda j: j.abandon("r/1", now=104, settle_until=400),
    "recheck": lambda j: j.recheck("r/1", 400),
    "revoking": lambda j: j.revoking("r/1"),
    "revoke_failed": lambda j: j.revoke_failed("r/1", "Throttling", next_attempt=600),
    "revoke_failed_uncounted": lambda j: j.revoke_failed(
        "r/1", "locked", next_attempt=900, count=False
    ),
    "forget": lambda j: j.forget("r/1"),
}
MUST_TOUCH = {"key_created", "activate", "abandon", "recheck", "revoking"}
MAY_BE_GONE = {
    "extend": None,
    "revoke_now": False,
    "revoke_failed": None,
    "revoke_failed_uncounted": None,
    "forget": False,
}


def test_the_rule_covers_every_write() -> None:
    assert set(WRITES) == MUST_TOUCH | set(MAY_BE_GONE)


@pytest.mark.parametrize("name", sorted(WRITES))
async def test_every_write_on_a_missing_record(store: Store, name: str) -> None:
    journal = store.open()
    if name in MUST_TOUCH:
        with pytest.raises(LostRecord, match="r/1"):
            await WRITES[name](journal)
    else:
        assert await WRITES[name](journal) is MAY_BE_GONE[name]
    assert journal.count() == 0 and (await store.reopen()).count() == 0


@pytest.mark.parametrize("name", sorted(WRITES))
async def test_every_write_on_a_record_removed_behind_the_agents_back(
    store: Store, name: str
) -> None:
    """Memory still holds it, storage does not: the store's conditional write
    finds none. A must-touch write is an error; none brings the record back."""
    journal = store.open()
    await journal.creating("r/1", "r", "u", now=100, revoke_at=3700)
    await journal.activate("r/1", 3700)
    await store.remove_behind("r/1")
    if name in MUST_TOUCH:
        with pytest.raises(LostRecord):
            await WRITES[name](journal)
    else:
        try:
            await WRITES[name](journal)
        except LostRecord:
            pass  # storage said so; also within the rule
    assert (await store.reopen()).count() == 0


@pytest.mark.parametrize("name", sorted(WRITES))
@pytest.mark.parametrize("state", ["creating", "active"])
async def test_every_write_is_durable_and_memory_agrees(
    store: Store, name: str, state: str
) -> None:
    journal = store.open()
    await journal.creating("r/1", "r", "u", now=100, revoke_at=3700)
    if state == "active":
        await journal.activate("r/1", 3700)
    before = journal.get("r/1")
    await WRITES[name](journal)
    after = journal.get("r/1")
    assert (await store.reopen()).get("r/1") == after
    expected = EXPECTED[name](before) if name != "forget" else None
    if name == "extend" and state == "creating":
        expected = before  # only an active lease is extended
    assert after == expected


def _changed(**changes: Any) -> Callable[[Record], Record]:
    return lambda r: dataclasses.replace(r, **changes)


EXPECTED: dict[str, Callable[[Record], Record]] = {
    "key_created": _changed(access_key_id="AKIA1"),
    "activate": _changed(state="active", revoke_at=3700),
    "extend": _changed(revoke_at=7300),
    "revoke_now": _changed(revoke_at=500, next_attempt=0.0),
    "abandon": _changed(revoke_at=104, next_attempt=0.0, settle_until=400),
    "recheck": _changed(
        revoke_at=400, next_attempt=0.0, settle_until=0.0, attempts=0, state="revoking"
    ),
    "revoking": _changed(state="revoking"),
    "revoke_failed": _changed(attempts=1, last_error="Throttling", next_attempt=600),
    "revoke_failed_uncounted": _changed(attempts=0, last_error="locked", next_attempt=900),
}


async def test_recovery_leaves_this_runs_issuances_alone(store: Store) -> None:
    """A request can come before start-up recovery: its record in 'creating' is
    an issuance in flight, not a half-created user of an earlier run."""
    earlier = store.open()
    await earlier.creating("r/old", "r", "old", now=100, revoke_at=3700)
    journal = await store.reopen()
    await journal.creating("r/new", "r", "new", now=150, revoke_at=3700)
    assert await journal.recover(now=200) == 1
    assert [r.lease_id for r in journal.due(200)] == ["r/old"]


async def test_abandoned_create_is_deleted_now_and_again_after_the_grace(store: Store) -> None:
    journal = store.open()
    await journal.creating("r/1", "r", "u", now=100, revoke_at=3700)
    await journal.abandon("r/1", now=104, settle_until=400)
    record = journal.get("r/1")
    assert record is not None and record.revoke_at == 104 and record.settle_until == 400
    await journal.recheck("r/1", 400)
    record = (await store.reopen()).get("r/1")
    assert record is not None and (record.revoke_at, record.settle_until) == (400, 0)


def test_a_journal_written_by_0_1_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
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
    with pytest.raises(statedir.StateError) as refused:
        statedir.open_journal(tmp_path)  # the agent's way in: one line, then exit 2
    assert "\n" not in str(refused.value)
    assert f"the journal {tmp_path / 'journal.sqlite3'} was written by dyncreds 0.1" in str(
        refused.value
    )
    assert "start dyncreds 0.2 on it once" in str(refused.value)
    with pytest.raises(OldJournal):
        SqliteJournal(path)
    # Nothing was changed: the 0.1 file still has its record, its columns, its meta.
    db = sqlite3.connect(path)
    assert db.execute("SELECT lease_id FROM leases").fetchall() == [("r/1",)]
    assert "settle_until" not in {row[1] for row in db.execute("PRAGMA table_info(leases)")}
    assert db.execute("SELECT count(*) FROM meta").fetchone() == (0,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)


async def test_a_failing_disk_is_an_error_the_agent_can_report(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    journal.close_now()  # any write now fails inside SQLite
    with pytest.raises(Exception, match="cannot be written"):
        await journal.creating("r/1", "r", "u", now=1, revoke_at=2)


@pytest.mark.e2e
async def test_a_fleet_record_taken_over_is_fenced_off(tmp_path: Path, aws: StandIn) -> None:
    """Agent a is cut off; agent b adopts a's record (the conditional write on the
    owner). a's next write fails, drops the record and tells the agent; a can no
    longer delete it (``revoking``) nor forget it; b's writes work."""
    from dyncreds.journal.dynamodb import DynamoDbJournal

    table = fleet_table(tmp_path, aws)
    lost: list[str] = []
    a = DynamoDbJournal(table, "agent-a", on_lost=lost.append)
    await a.creating("r/1", "r", "user-1", now=100, revoke_at=3700)
    await a.activate("r/1", 3700)
    (held,) = await table.records("agent-a", "agent-a")
    assert await table.adopt(held, "agent-b", lambda r: {}) is not None
    with pytest.raises(TakenOver):
        await a.revoking("r/1")
    assert lost == ["r/1"] and a.get("r/1") is None and a.lost == ["r/1"]
    assert not await a.revoke_now("r/1", 200)
    assert not await a.forget("r/1")
    # a second adopter, with what it read before: exactly one wins
    assert await table.adopt(held, "agent-c", lambda r: {}) is None
    b = DynamoDbJournal(table, "agent-b")
    records = await table.records("agent-a", "agent-b")
    assert [r.lease_id for r, _ in records] == ["r/1"]
    b.adopted(records[0][0], "agent-a")
    await b.revoking("r/1")
    assert await b.forget("r/1")
    assert await table.records("agent-a", "agent-b") == []


@pytest.mark.e2e
async def test_a_record_created_while_the_fleet_journal_loads_is_kept(
    tmp_path: Path, aws: StandIn
) -> None:
    """Start-up recovery (a load) runs beside serving: an issuance that journals
    during the load must not be overwritten by the load's snapshot."""
    import trio

    from dyncreds.journal.dynamodb import DynamoDbJournal

    table = fleet_table(tmp_path, aws)
    earlier = DynamoDbJournal(table, "agent-a")
    await earlier.creating("r/old", "r", "user-old", now=1, revoke_at=3600)
    journal = DynamoDbJournal(table, "agent-a")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.recover, 2.0)
        nursery.start_soon(journal.creating, "r/new", "r", "user-new", 2.0, 3600.0)
    assert journal.get("r/new") is not None and journal.get("r/old") is not None
    assert journal.user_names() == {"user-old", "user-new"}


@pytest.mark.e2e
async def test_a_conditional_write_whose_reply_was_lost_is_not_a_lost_race(
    tmp_path: Path, aws: StandIn
) -> None:
    """Every conditional write of the fleet, with its first reply lost (AWS did
    it; the connection closed before the answer): botocore retries, the retry
    meets the condition the first attempt changed, the item is read back and
    "already mine" is success - never "a peer won" or "taken over"."""
    from dyncreds.fleetitems import AgentItem
    from dyncreds.journal.dynamodb import DynamoDbJournal
    from tests.faultproxy import Fault, FaultProxy

    proxy = FaultProxy(aws.endpoint).start()
    try:
        table = aws.fleet_table(tmp_path, table="lost-replies", name="t", endpoint=proxy.endpoint)

        def lose(action: str, contains: str) -> Fault:
            return proxy.add(
                Fault(frozenset({action}), lose_reply=True, times=1, contains=contains)
            )

        me = AgentItem(agent_id="a", host="h", pid=1, token="t1", beat=1)
        faults = [lose("UpdateItem", "REMOVE taken_by")]
        await table.register(me, [], 1.0)
        faults.append(lose("UpdateItem", "beat = :beat, leases"))
        await table.heartbeat(AgentItem(agent_id="a", token="t1", beat=2), 2.0)
        await table.register(AgentItem(agent_id="b", token="t2"), [], 1.0)
        dead = await table.agent("b")
        assert dead is not None
        faults.append(lose("UpdateItem", "taken_by = :me, taken_at"))
        await table.claim(dead, "a", 3.0)  # not AgentConflict: a won
        faults.append(lose("UpdateItem", "finished = :yes"))
        await table.finish("b", "a")

        b = DynamoDbJournal(table, "b")
        faults.append(lose("PutItem", "creating"))
        await b.creating("r/1", "r", "u", now=100, revoke_at=3700)  # not TakenOver
        faults.append(lose("UpdateItem", "#owner = :new"))
        (held,) = await table.records("b", "b")
        adopted = await table.adopt(held, "a", lambda r: {"revoke_at": 3702.0})
        assert adopted is not None and adopted[1].owner == "a" and adopted[0].revoke_at == 3702
        await table.add_adopted("a", {"b"})
        a = DynamoDbJournal(table, "a")
        await a.load()
        assert a.get("r/1") is not None
        faults.append(lose("DeleteItem", "owner"))
        assert await a.forget("r/1")

        assert all(f.hits == 1 for f in faults), [f.contains for f in faults if f.hits != 1]
        item = await table.agent("b")
        assert item is not None and item.taken_by == "a" and item.finished
        assert await table.records("b", "a") == []
    finally:
        proxy.stop()


@pytest.mark.e2e
async def test_every_item_read_is_validated_and_a_bad_one_skipped(
    tmp_path: Path, aws: StandIn
) -> None:
    """Hand-written items that do not fit the schema: each is skipped, remembered
    (for `fleet status`) once, and the good ones are read as usual."""
    from dyncreds.fleetitems import AgentItem
    from dyncreds.journal.dynamodb import DynamoDbJournal

    table = fleet_table(tmp_path, aws)
    await table.register(AgentItem(agent_id="good", token="t"), [], 1.0)
    good = DynamoDbJournal(table, "good")
    await good.creating("r/ok", "r", "u", now=1, revoke_at=2)
    client = aws.client("dynamodb")
    bad_items = [
        {"pk": {"S": "t#agents"}, "sk": {"S": "beat-str"}, "heartbeat": {"S": "soon"}},
        {"pk": {"S": "t#agents"}, "sk": {"S": "pid-list"}, "pid": {"L": [{"N": "1"}]}},
        {
            "pk": {"S": "t#records#good"},
            "sk": {"S": "r/bad"},
            **{k: {"S": v} for k, v in [("lease_id", "r/bad"), ("role", "r"), ("user_name", "x")]},
            **{
                k: {"S": v} for k, v in [("state", "active"), ("owner", "good"), ("origin", "good")]
            },
            "created_at": {"N": "1"},
            "revoke_at": {"S": "tomorrow"},
        },
    ]
    for item in bad_items:
        client.put_item(TableName="journal-contract", Item=item)
    for _ in range(2):
        assert [a.agent_id for a in await table.roster()] == ["good"]
        assert [r.lease_id for r, _ in await table.records("good", "good")] == ["r/ok"]
    assert sorted(table.bad) == ["t#agents/beat-str", "t#agents/pid-list", "t#records#good/r/bad"]
    assert "revoke_at" in table.bad["t#records#good/r/bad"]
    assert await table.agent("pid-list") is None
    skew = table.skew()  # measured from the Date of the table's answers
    assert skew is not None and abs(skew) < 3


@pytest.mark.e2e
async def test_an_agent_item_written_by_0_2_is_judged_and_claimed_by_its_heartbeat(
    tmp_path: Path, aws: StandIn
) -> None:
    """0.2 agents write no token and no counter: their wall-clock heartbeat is
    the pulse, and the claim is conditional on it (exactly one claimer wins)."""
    from dyncreds.fleetitems import AgentConflict

    table = fleet_table(tmp_path, aws)
    aws.client("dynamodb").put_item(
        TableName="journal-contract",
        Item={
            "pk": {"S": "t#agents"},
            "sk": {"S": "old"},
            "host": {"S": "h"},
            "pid": {"N": "7"},
            "heartbeat": {"N": "1700000000.125"},
            "leases": {"N": "1"},
        },
    )
    (old,) = await table.roster()
    assert old.pulse == ("", 0, 1700000000.125)
    await table.claim(old, "new", 1.0)
    with pytest.raises(AgentConflict):
        await table.claim(old, "other", 1.0)
    claimed = await table.agent("old")
    assert claimed is not None and claimed.taken_by == "new"


@pytest.mark.e2e
async def test_journal_open_chooses_the_store_the_configuration_asks_for(
    tmp_path: Path, aws: StandIn
) -> None:
    """Without [fleet] the state dir's SQLite journal; with it, the fleet's table.
    Every store answers the whole interface, ``close_now`` included."""
    from dyncreds import config
    from dyncreds.journal import stores
    from dyncreds.journal.dynamodb import DynamoDbJournal
    from dyncreds.journal.rules import Rules

    table = fleet_table(tmp_path, aws)
    local = SqliteJournal(tmp_path / "j.sqlite3")
    fleet = stores.open(config.load(tmp_path), stores.Places(local, "agent-a", table))
    assert isinstance(fleet, DynamoDbJournal) and fleet.agent_id == "agent-a"
    text = (tmp_path / "config.toml").read_text()
    (tmp_path / "config.toml").write_text(text[: text.index("[fleet]")])
    assert stores.open(config.load(tmp_path), stores.Places(local, "agent-a")) is local
    assert set(stores.STORES) == {"sqlite", "dynamodb"}
    for journal in (local, fleet):
        assert isinstance(journal, Rules)
        journal.close_now()


@pytest.mark.e2e
async def test_a_fleet_is_not_joined_while_the_local_journal_tracks_users(
    tmp_path: Path, aws: StandIn
) -> None:
    from dyncreds import config, wiring

    fleet_table(tmp_path, aws)
    local = SqliteJournal(tmp_path / "j.sqlite3")
    await local.creating("r/1", "r", "u", now=1, revoke_at=2)
    with pytest.raises(wiring.StartupError, match="still tracks 1 IAM users"):
        wiring.open_journal(config.load(tmp_path), local, "agent-a", wiring.Cycles())
    assert local.count() == 1
    local.close_now()
