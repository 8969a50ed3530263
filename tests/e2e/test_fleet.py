"""A fleet of agents sharing one DynamoDB table, on moto's server (IAM with
enforcement, and DynamoDB), every AWS request of every agent through one
recording proxy.

An agent SIGKILLed for good while it holds a served iam_user lease: a peer takes
it over (exactly one of the two racing peers wins) and deletes the user at the
expiry the lease announced - not before - with exactly one DeleteUser. An agent
cut off from the table refuses new iam_user leases, keeps serving the ones it
has, and, once back, stops serving those a peer took over meanwhile.

Then faults at the edge: lost replies of conditional writes, a copied identity,
hand-written bad items, a re-created table, a PutItem that lands late, a claimer
killed mid-takeover (clocks and pauses: test_fleet_clocks.py; churn:
test_fleet_churn.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from dyncreds.aws.standin import StandIn
from dyncreds.protocol import parse_rfc3339
from tests.conftest import AgentProcess, temp_users, wait_for
from tests.e2e.fleetrig import (
    ROLE,
    FleetRig,
    fleet_status,
    joined,
    lease_of,
    took_over,
    user_exists,
)
from tests.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.e2e


def test_a_dead_agents_users_are_deleted_once_at_their_announced_expiry(fleet: FleetRig) -> None:
    a, b, c = fleet.agent("a"), fleet.agent("b"), fleet.agent("c")
    init = a.cli("fleet", "init")
    assert "dyncreds-fleet" in init.stdout
    assert "ready" in a.cli("fleet", "init").stdout  # idempotent
    for made in (a, b, c):
        made.start()
    held = lease_of(a)
    (user,) = temp_users(fleet.aws)  # a's lease's IAM user
    own = lease_of(b)
    expires = parse_rfc3339(held["expires_at"])
    status = json.loads(b.cli("fleet", "status", "--json").stdout)
    assert len(status["agents"]) == 3 and all(x["alive"] for x in status["agents"])

    a.kill()
    killed_at = time.time()
    wait_for(lambda: took_over(b, c), timeout=30, message="a peer takes a over")
    # dead_after (4 s) after its last heartbeat, which was at most 1 s before the kill
    assert time.time() - killed_at >= 3
    winners = [m for m in (b, c) if took_over(m)]
    assert len(winners) == 1, "two peers took the same dead agent over"
    status = json.loads(b.cli("fleet", "status", "--json").stdout)
    by_id = {x["id"]: x for x in status["agents"]}
    a_id = next(x for x in status["agents"] if not x["alive"])["id"]
    assert sum(1 for x in status["agents"] if x["alive"]) == 2
    assert by_id[a_id]["taken_over_by"] is not None
    assert any(p["user"] == user for p in status["pending"])
    table = b.cli("fleet", "status").stdout
    assert "dead" in table and table.count("alive") == 2
    console_fleet_card(winners[0], user)

    # Not before the announced expiry ...
    wait_for(lambda: time.time() >= expires - 3, timeout=90, interval=0.2, message="expiry - 3s")
    assert user_exists(fleet.aws, user), "revoked before its announced expiry"
    # ... and gone after it, with one DeleteUser in all.
    wait_for(lambda: not user_exists(fleet.aws, user), timeout=40, interval=0.5, message="revoked")
    assert time.time() >= expires
    assert fleet.delete_user_calls(user) == 1
    # The survivors were never fenced: their own records stayed theirs.
    assert lease_of(b)["id"] and own["id"]
    assert "fleet.taken_over" not in b.log() + c.log()


def console_fleet_card(winner: AgentProcess, user: str) -> None:
    """The console's overview says what the winner's status says: the fleet, its
    table, and one record taken over from one dead agent."""
    from tests.e2e.uikit import console

    with console(winner.env, winner.base / "ui.log") as ui:
        status, _, body = ui.request("GET", "/", cookie=ui.sign_in())
    assert status == 200
    card = " ".join(
        re.sub(r"<[^>]+>", " ", body.split('id="fleet"', 1)[1].split("</dl>", 1)[0]).split()
    )
    assert "Fleet ci" in card and "Table dyncreds-fleet" in card and "Reachable yes" in card
    assert "Joined yes" in card
    assert re.search(r"Taken over 1 record from 1 dead agent: \S+ at 20\d\d-", card), card


def test_an_agent_cut_off_from_the_table_refuses_iam_users_and_is_fenced_when_back(
    fleet: FleetRig,
) -> None:
    cut = FaultProxy(fleet.aws.endpoint).start()  # d's DynamoDB only
    try:
        d = fleet.agent("d", dynamodb=cut.endpoint, roles={"r": ROLE, "cold": ROLE})
        e = fleet.agent("e")
        d.cli("fleet", "init")
        d.start()
        e.start()
        served = lease_of(d)
        cut.add(Fault(drop=True))  # the table is unreachable for d

        assert lease_of(d)["id"] == served["id"]  # a valid lease is still served
        refused = d.request("credentials", role="cold")
        assert refused["error"]["code"] == "upstream"
        assert "fleet table dyncreds-fleet" in refused["error"]["message"]
        assert not any(
            c.action == "CreateUser" for c in fleet.proxy.calls if "cold" in str(c.params)
        )
        wait_for(
            lambda: d.request("status")["fleet"]["reachable"] is False, message="d sees the cut"
        )
        # e declares d dead and takes its record over.
        wait_for(lambda: took_over(e), timeout=30, message="e takes d over")

        cut.clear()  # the table is back for d
        wait_for(
            lambda: d.request("status")["fleet"]["taken_from_us"] >= 1,
            timeout=30,
            message="d learns it was taken over",
        )
        fleet_view = d.request("status")["fleet"]
        assert fleet_view["reachable"] is True and served["id"] in fleet_view["lost_leases"]
        assert lease_of(d)["id"] != served["id"]  # the taken lease is not served anymore
        assert lease_of(d, "cold")["id"]  # and new iam_user leases are issued again
        assert "fleet.taken_over" in d.log()
    finally:
        cut.stop()


def test_a_missing_table_is_an_error_that_names_fleet_init(fleet: FleetRig) -> None:
    f = fleet.agent("f", roles={"r": ROLE, "s": 'credential_type = "session_token"\n'})
    f.start()
    refused = f.request("credentials", role="r")
    assert refused["error"]["code"] == "upstream"
    assert "does not exist" in refused["error"]["message"]
    assert "dyncreds fleet init" in refused["error"]["message"]
    assert f.request("credentials", role="s")["ok"]  # STS types need no table
    wait_for(
        lambda: "fleet init" in str(f.request("status")["fleet"]["error"]),
        message="status names fleet init",
    )
    assert "Traceback" not in f.log()


def test_fleet_commands_without_a_fleet_say_what_to_add(short_dir: Path, aws: StandIn) -> None:
    lone = AgentProcess(short_dir, aws, {"r": ROLE}).start()
    try:
        result = lone.cli("fleet", "status", check=False)
        assert result.returncode != 0 and "[fleet]" in result.stderr
        result = lone.cli("fleet", "init", check=False)
        assert result.returncode != 0 and "[fleet]" in result.stderr
    finally:
        lone.stop()


# --------------------------------------------------------------------------- faults


def test_a_takeover_whose_replies_were_lost_is_still_won_and_finished(fleet: FleetRig) -> None:
    """b's claim and its first adopt write both reach the table, but their replies
    are lost; botocore retries each and meets its own write. b reads it back:
    the claim is won and the record adopted - not "another peer was first"."""
    own = FaultProxy(fleet.aws.endpoint).start()  # b's DynamoDB
    try:
        a, b = fleet.agent("a"), fleet.agent("b", dynamodb=own.endpoint)
        a.cli("fleet", "init")
        a.start()
        b.start()
        wait_for(lambda: joined(a) and joined(b), message="both joined")
        lease_of(a)
        claim = own.add(
            Fault(frozenset({"UpdateItem"}), contains="taken_by = :me", lose_reply=True, times=1)
        )
        adopt = own.add(
            Fault(frozenset({"UpdateItem"}), contains="#owner = :new", lose_reply=True, times=1)
        )
        a.kill()
        wait_for(lambda: took_over(b), timeout=30)
        assert claim.hits == 1 and adopt.hits == 1
        assert b.log().count("fleet.write_already_applied") == 2
        assert "fleet.takeover_lost" not in b.log()
        status = fleet_status(b)
        b_id = b.request("status")["agent"]["id"]
        (record,) = status["pending"]
        assert record["owner"] == b_id
        assert status["unfinished_takeovers"] == []
        assert b.request("status")["fleet"]["took_over"][0]["records"] == 1
    finally:
        own.stop()


def test_a_copied_identity_is_refused_in_one_line(fleet: FleetRig) -> None:
    """b's state dir gets a's agent-id (a cloned image): b sees a's item change
    under a start token it never used, and stays out of the fleet, saying so in
    one line; a goes on."""
    a, b = fleet.agent("a"), fleet.agent("b")
    a.cli("fleet", "init")
    a.start()
    held = lease_of(a)  # at once: an issuance may come before the fleet's load
    b.state_dir.mkdir(mode=0o700)
    (b.state_dir / "agent-id").write_text((a.state_dir / "agent-id").read_text())
    b.start()
    wait_for(lambda: "fleet.identity_conflict" in b.log(), timeout=30, message="b refused")
    (line,) = [x for x in b.log().splitlines() if "fleet.identity_conflict" in x]
    assert "is in use by another agent" in line and "agent-id" in line
    refused = b.request("credentials", role="r")
    assert refused["error"]["code"] == "unavailable"
    assert "in use by another agent" in refused["error"]["message"]
    assert lease_of(a)["id"] == held["id"] and "fleet.identity_conflict" not in a.log()
    assert [x["alive"] for x in fleet_status(a)["agents"]] == [True]


def test_bad_items_are_skipped_shown_and_end_no_agent(fleet: FleetRig) -> None:
    """Hand-written items that do not fit: a roster item whose heartbeat is a
    string, one whose pid is a list, and a record (of an agent about to die)
    whose revoke_at is a string. Every agent lives on; a takeover still happens;
    `fleet status` lists them; a restarted agent starts."""
    a, b, c = fleet.agent("a"), fleet.agent("b"), fleet.agent("c")
    a.cli("fleet", "init")
    for made in (a, b, c):
        made.start()
    wait_for(lambda: all(joined(x) for x in (a, b, c)), message="all joined")
    lease_of(c)
    c_id = c.request("status")["agent"]["id"]
    client = fleet.aws.client("dynamodb")
    for item in [
        {"pk": {"S": "ci#agents"}, "sk": {"S": "string-heartbeat"}, "heartbeat": {"S": "x"}},
        {"pk": {"S": "ci#agents"}, "sk": {"S": "list-pid"}, "pid": {"L": [{"N": "1"}]}},
        {
            "pk": {"S": f"ci#records#{c_id}"},
            "sk": {"S": "r/bad"},
            "lease_id": {"S": "r/bad"},
            "owner": {"S": c_id},
            "origin": {"S": c_id},
            "revoke_at": {"S": "soon"},
        },
    ]:
        client.put_item(TableName="dyncreds-fleet", Item=item)
    c.kill()
    wait_for(lambda: took_over(a, b), timeout=30, message="c taken over")
    time.sleep(3)  # a few more heartbeats and roster reads
    assert a.process is not None and a.process.poll() is None
    assert b.process is not None and b.process.poll() is None
    bad = {x["item"] for x in fleet_status(a)["bad_items"]}
    assert {"ci#agents/string-heartbeat", "ci#agents/list-pid"} <= bad
    assert f"ci#records#{c_id}/r/bad" in {x["item"] for x in fleet_status(b)["bad_items"]}
    assert a.log().count("fleet.bad_item item=ci#agents/list-pid") == 1  # logged once
    b.stop()
    b.start()
    wait_for(lambda: joined(b), message="b joins again")
    assert lease_of(b)["id"]
    assert "Traceback" not in a.log() + b.log()


def test_a_recreated_table_is_said_as_such(fleet: FleetRig) -> None:
    """The table is deleted and created again while a serves a lease: a says its
    item is gone (not that a peer declared it dead), joins again, and stops
    serving the lease the table lost."""
    a = fleet.agent("a")
    a.cli("fleet", "init")
    a.start()
    held = lease_of(a)
    client = fleet.aws.client("dynamodb")
    client.delete_table(TableName="dyncreds-fleet")
    a.cli("fleet", "init")
    wait_for(lambda: "fleet.item_gone" in a.log(), timeout=20, message="a sees its item gone")
    wait_for(lambda: a.request("status")["fleet"]["lost_leases"] == [held["id"]], timeout=20)
    assert "fleet.taken_over" not in a.log()
    assert a.request("status")["fleet"]["taken_from_us"] == 0
    assert lease_of(a)["id"] != held["id"]


def test_a_creating_record_that_landed_late_is_cleaned_up(fleet: FleetRig) -> None:
    """a's PutItem(creating) is held on the way past the call's deadline: the
    issuance fails, having created nothing; later the PutItem lands. a finds the
    record it does not know in its partition and cleans it up."""
    own = FaultProxy(fleet.aws.endpoint).start()  # a's DynamoDB
    try:
        a = fleet.agent(
            "a",
            dynamodb=own.endpoint,
            settings='aws_call_timeout = "1s"\nissue_timeout = "5s"',
            root="max_retries = 0\n",
        )
        a.cli("fleet", "init")
        a.start()
        wait_for(lambda: joined(a), message="a joined")
        own.add(Fault(frozenset({"PutItem"}), contains='"creating"', hold=3.0, times=1))
        failed = a.request("credentials", role="r")
        assert not failed["ok"] and fleet.created_users() == []
        client = fleet.aws.client("dynamodb")

        def records() -> list[Any]:
            return list(client.scan(TableName="dyncreds-fleet")["Items"])

        wait_for(lambda: any("creating" in str(i) for i in records()), message="the late put")
        wait_for(lambda: "fleet.stale_records" in a.log(), timeout=20, message="a finds it")
        wait_for(lambda: not any("records" in i["pk"]["S"] for i in records()), timeout=20)
    finally:
        own.stop()


def test_a_takeover_whose_claimer_died_is_inherited_and_finished(fleet: FleetRig) -> None:
    """b claims dead a and is SIGKILLed at its first adopt write: a's item says
    taken by b, nothing adopted - an unfinished takeover, shown as such. c takes
    dead b over, inherits b's claim on a, and adopts a's record too."""
    own = FaultProxy(fleet.aws.endpoint)  # b's DynamoDB
    a, b, c = fleet.agent("a"), fleet.agent("b", dynamodb="http://127.0.0.1:1"), fleet.agent("c")
    own.on_kill = b.kill
    own.start()
    try:
        config = b.config_dir / "config.toml"
        config.write_text(config.read_text().replace("http://127.0.0.1:1", own.endpoint))
        a.cli("fleet", "init")
        for made in (a, b):
            made.start()
        wait_for(lambda: joined(a) and joined(b), message="a and b joined")
        lease_of(a)
        a_id = a.request("status")["agent"]["id"]
        own.add(Fault(frozenset({"UpdateItem"}), contains="#owner = :new", kill="before", times=1))
        a.kill()
        assert b.process is not None
        wait_for(lambda: b.process is not None and b.process.poll() is not None, timeout=30)
        c.start()
        wait_for(lambda: a_id in fleet_status(c)["unfinished_takeovers"], message="unfinished")
        assert "(unfinished)" in c.cli("fleet", "status").stdout
        wait_for(lambda: "fleet.takeover_inherited" in c.log(), timeout=30, message="inherited")
        # Inherited, then adopted record by record: finished a moment after the log line.
        wait_for(
            lambda: fleet_status(c)["unfinished_takeovers"] == [], timeout=30, message="finished"
        )
        status = fleet_status(c)
        c_id = c.request("status")["agent"]["id"]
        assert [p["owner"] for p in status["pending"]] == [c_id]
        assert {x["taken_over_by"] for x in status["agents"] if not x["me"]} == {c_id}
    finally:
        own.stop()
