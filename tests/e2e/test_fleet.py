"""A fleet of agents sharing one DynamoDB table, on moto's server (IAM with
enforcement, and DynamoDB), every AWS request of every agent through one
recording proxy.

An agent SIGKILLed for good while it holds a served iam_user lease: a peer takes
it over (exactly one of the two racing peers wins) and deletes the user at the
expiry the lease announced - not before - with exactly one DeleteUser. An agent
cut off from the table refuses new iam_user leases, keeps serving the ones it
has, and, once back, stops serving those a peer took over meanwhile."""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from dyncreds.protocol import parse_rfc3339
from dyncreds.standin import StandIn
from tests.conftest import AgentProcess, iam_user_role, raw_request, temp_users, wait_for
from tests.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.e2e

ROLE = iam_user_role(extra='ttl = "60s"\nmax_ttl = "60s"\n')


def fleet_table(endpoint: str) -> str:
    return f"""
    [fleet]
    table = "dyncreds-fleet"
    name = "ci"
    endpoint = "{endpoint}"
    heartbeat = "1s"
    dead_after = "4s"
    """


class Fleet:
    def __init__(self, aws: StandIn, base: Path):
        self.aws = aws
        self.base = base
        self.proxy = FaultProxy(aws.endpoint).start()  # IAM, STS and DynamoDB of all
        self.agents: dict[str, AgentProcess] = {}

    def agent(
        self,
        name: str,
        dynamodb: str | None = None,
        roles: dict[str, str] | None = None,
        settings: str = "",
        root: str = "",
    ) -> AgentProcess:
        """``settings``: lines for [agent]; ``root``: more lines for [root]."""
        base = self.base / name
        base.mkdir(mode=0o700)
        made = AgentProcess(
            base,
            self.aws,
            roles or {"r": ROLE},
            agent=settings,
            tables=root + fleet_table(dynamodb or self.proxy.endpoint),
        )
        config = made.config_dir / "config.toml"
        config.write_text(
            config.read_text().replace(
                f'_endpoint = "{self.aws.endpoint}"', f'_endpoint = "{self.proxy.endpoint}"'
            )
        )
        self.agents[name] = made
        return made

    def stop(self) -> None:
        for made in self.agents.values():
            if made.process and made.process.poll() is None:
                made.stop()
        self.proxy.stop()

    def delete_user_calls(self, user: str) -> int:
        return sum(1 for c in self.proxy.calls_of("DeleteUser") if c.params.get("UserName") == user)

    def deleted(self, user: str) -> list[float]:
        """When each DeleteUser of this user that succeeded reached AWS (true time)."""
        return [
            c.received
            for c in self.proxy.calls_of("DeleteUser")
            if c.params.get("UserName") == user and c.status == 200
        ]

    def user_of(self, lease_id: str) -> str:
        """The IAM user an iam_user lease was made of (its dyncreds:lease tag)."""
        for call in self.proxy.calls_of("CreateUser"):
            if call.status == 200 and lease_id in call.params.values():
                return call.params["UserName"]
        raise AssertionError(f"no CreateUser for {lease_id}")

    def created_users(self) -> list[str]:
        return [c.params["UserName"] for c in self.proxy.calls_of("CreateUser") if c.status == 200]


@pytest.fixture
def fleet(aws: StandIn, short_dir: Path) -> Iterator[Fleet]:
    made = Fleet(aws, short_dir)
    try:
        yield made
    finally:
        made.stop()


def user_exists(aws: StandIn, name: str) -> bool:
    return any(u["UserName"] == name for u in aws.client("iam").list_users()["Users"])


def lease_of(agent: AgentProcess, role: str = "r") -> dict[str, str]:
    result = agent.request("credentials", role=role)
    assert result["ok"], result
    return dict(result["lease"])


def test_a_dead_agents_users_are_deleted_once_at_their_announced_expiry(fleet: Fleet) -> None:
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
    wait_for(
        lambda: "fleet.takeover" in b.log() + c.log(), timeout=30, message="a peer takes a over"
    )
    # dead_after (4 s) after its last heartbeat, which was at most 1 s before the kill
    assert time.time() - killed_at >= 3
    winners = [m for m in (b, c) if "fleet.takeover" in m.log()]
    assert len(winners) == 1, "two peers took the same dead agent over"
    status = json.loads(b.cli("fleet", "status", "--json").stdout)
    by_id = {x["id"]: x for x in status["agents"]}
    a_id = next(x for x in status["agents"] if not x["alive"])["id"]
    assert sum(1 for x in status["agents"] if x["alive"]) == 2
    assert by_id[a_id]["taken_over_by"] is not None
    assert any(p["user"] == user for p in status["pending"])
    table = b.cli("fleet", "status").stdout
    assert "dead" in table and table.count("alive") == 2

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


def test_an_agent_cut_off_from_the_table_refuses_iam_users_and_is_fenced_when_back(
    fleet: Fleet,
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
        wait_for(lambda: "fleet.takeover" in e.log(), timeout=30, message="e takes d over")

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


def test_a_missing_table_is_an_error_that_names_fleet_init(fleet: Fleet) -> None:
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


def joined(agent: AgentProcess) -> bool:
    return bool(agent.request("status")["fleet"]["joined"])


def fleet_status(agent: AgentProcess) -> dict[str, Any]:
    return dict(json.loads(agent.cli("fleet", "status", "--json").stdout))


def faketime(offset: str) -> dict[str, str]:
    """The environment that runs one agent process on a clock ``offset`` off
    (libfaketime, from Debian's faketime package)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        if os.environ.get("DYNCREDS_REQUIRE_CLIENTS"):
            pytest.fail("libfaketime is not installed (.ci/install-clients installs faketime)")
        pytest.skip("libfaketime is not installed")
    return {"LD_PRELOAD": found[0], "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def test_a_paused_agent_deletes_the_user_it_created_after_its_record_was_taken(
    fleet: Fleet,
) -> None:
    """a is stopped (SIGSTOP) right after journaling a user, before CreateUser; b
    takes a over and deletes the user that is not there yet, keeping the record
    for a second look after create_grace. a resumes: its CreateUser lands, the
    record is not its own any more - and a deletes what it just created."""
    own = FaultProxy(fleet.aws.endpoint).start()  # a's DynamoDB
    try:
        a = fleet.agent("a", dynamodb=own.endpoint)
        b = fleet.agent("b")
        a.cli("fleet", "init")
        a.start()
        b.start()
        wait_for(lambda: joined(a) and joined(b), message="both joined")
        assert a.process is not None
        pid = a.process.pid
        own.add(
            Fault(
                frozenset({"PutItem"}),
                contains='"creating"',
                times=1,
                then=lambda: os.kill(pid, signal.SIGSTOP),
            )
        )
        answer: dict[str, Any] = {}
        asking = threading.Thread(target=lambda: answer.update(a.request("credentials", role="r")))
        asking.start()
        try:
            wait_for(lambda: "fleet.takeover" in b.log(), timeout=30, message="b takes a over")
            wait_for(lambda: "revoked_pending_recheck" in b.log(), message="b deletes, to recheck")
            assert fleet.created_users() == []  # a is stopped before its CreateUser
        finally:
            os.kill(pid, signal.SIGCONT)
        asking.join(60)
        wait_for(fleet.created_users, message="a's CreateUser, once resumed")
        (user, *_) = fleet.created_users()
        wait_for(lambda: not user_exists(fleet.aws, user), timeout=30, message="a deletes it")
        assert len(fleet.deleted(user)) == 1
        assert "lease.reclaimed" in a.log()
        # b keeps its record for the second look after create_grace
        pending = fleet_status(b)["pending"]
        assert any(p["owner"] != a.request("status")["agent"]["id"] for p in pending)
        assert "Traceback" not in a.log() + b.log()
    finally:
        own.stop()


def test_clocks_off_by_seconds_or_minutes(fleet: Fleet) -> None:
    """s runs 30 s behind (libfaketime), f 10 min ahead. Nobody's wall clock
    judges a peer: f, beyond the 60 s bound, does not join and claims nobody;
    s joins, and each agent's skew against AWS's clock is shown. When s dies, b
    revokes s's lease at the instant s announced - on s's clock, 30 s later than
    b's - and not before."""
    s, b = fleet.agent("s"), fleet.agent("b")
    f = fleet.agent("f")
    s.cli("fleet", "init")
    s.start(faketime("-30s"))
    b.start()
    f.start(faketime("+10m"))
    wait_for(lambda: joined(s) and joined(b), message="s and b join")
    held = lease_of(s)
    (user,) = temp_users(fleet.aws)
    announced = parse_rfc3339(held["expires_at"])  # on s's clock
    assert s.request("status")["fleet"]["skew"] == pytest.approx(-30, abs=2)
    skews = {a["host"] + str(a["pid"]): a["skew"] for a in fleet_status(b)["agents"]}
    assert sorted(round(v) for v in skews.values()) == pytest.approx([-30, 0], abs=2)
    wait_for(lambda: "fleet.not_joining" in f.log(), message="f refuses to join")
    view = f.request("status")["fleet"]
    assert not view["joined"] and "ahead of AWS" in view["error"]
    refused = f.request("credentials", role="r")
    assert refused["error"]["code"] == "unavailable" and "clock" in refused["error"]["message"]
    time.sleep(6)  # longer than dead_after: nobody was claimed
    assert "fleet.takeover" not in s.log() + b.log() + f.log()

    s.kill()
    wait_for(lambda: "fleet.takeover" in b.log(), timeout=30, message="b takes s over")
    wait_for(lambda: fleet.deleted(user), timeout=120, interval=0.5, message="revoked")
    (deleted_at,) = fleet.deleted(user)
    assert deleted_at >= announced + 30, "revoked before the instant s announced"
    assert deleted_at <= announced + 30 + 15


def test_a_takeover_whose_replies_were_lost_is_still_won_and_finished(fleet: Fleet) -> None:
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
        wait_for(lambda: "fleet.takeover " in b.log() or "fleet.takeover\n" in b.log(), timeout=30)
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


def test_a_copied_identity_is_refused_in_one_line(fleet: Fleet) -> None:
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


def test_bad_items_are_skipped_shown_and_end_no_agent(fleet: Fleet) -> None:
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
    wait_for(lambda: "fleet.takeover" in a.log() + b.log(), timeout=30, message="c taken over")
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


def test_a_dead_agents_tag_is_swept_by_the_peer_that_took_it_over(fleet: Fleet) -> None:
    """a serves two users; the record of one is deleted by hand, then a dies. b
    adopts the other record, sweeps a's tag and finds the user no record tracks:
    each user is deleted once, neither before the expiry it announced."""
    a = fleet.agent("a", roles={"r": ROLE, "q": ROLE})
    b = fleet.agent("b", settings='orphan_min_age = "1s"')
    a.cli("fleet", "init")
    a.start()
    b.start()
    wait_for(lambda: joined(a) and joined(b), message="both joined")
    tracked, untracked = lease_of(a, "r"), lease_of(a, "q")
    a_id = a.request("status")["agent"]["id"]
    fleet.aws.client("dynamodb").delete_item(
        TableName="dyncreds-fleet",
        Key={"pk": {"S": f"ci#records#{a_id}"}, "sk": {"S": untracked["id"]}},
    )
    a.kill()
    wait_for(lambda: "orphan.found" in b.log(), timeout=30, message="b sweeps a's tag")
    assert b.log().count("orphan.found") == 1  # the adopted one is tracked: not an orphan
    for lease in (tracked, untracked):
        user, expires = fleet.user_of(lease["id"]), parse_rfc3339(lease["expires_at"])
        wait_for(partial(fleet.deleted, user), timeout=90, interval=0.5, message="deleted")
        (deleted_at,) = fleet.deleted(user)
        assert deleted_at >= expires, "revoked before its announced expiry"
        assert not user_exists(fleet.aws, user)


def test_a_recreated_table_is_said_as_such(fleet: Fleet) -> None:
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


def test_a_creating_record_that_landed_late_is_cleaned_up(fleet: Fleet) -> None:
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


CHURN_ROLES = {f"r{i:02d}": ROLE for i in range(20)}
CHURN_SECONDS = 30.0


class Churn:
    """Three agents (one 30 s ahead), killed, stopped and restarted at random."""

    def __init__(self, fleet: Fleet, seed: int):
        self.fleet = fleet
        self.rng = random.Random(seed)
        self.agents = {name: fleet.agent(name, roles=CHURN_ROLES) for name in ("p", "q", "f")}
        self.env = {"p": {}, "q": {}, "f": faketime("+30s")}
        self.skew = {"p": 0.0, "q": 0.0, "f": 30.0}
        self.down: dict[str, float] = {}  # name -> when to start it again
        self.stopped: dict[str, float] = {}  # name -> when to SIGCONT it
        self.served: list[tuple[str, dict[str, str]]] = []  # (agent, lease)
        self.events: list[str] = []

    def start(self, name: str) -> None:
        self.agents[name].start(self.env[name])

    def running(self) -> list[str]:
        return [n for n in self.agents if n not in self.down and n not in self.stopped]

    def step(self, now: float) -> None:
        for name, at in list(self.down.items()):
            if now >= at:
                del self.down[name]
                self.start(name)
        for name, at in list(self.stopped.items()):
            if now >= at:
                del self.stopped[name]
                self._signal(name, signal.SIGCONT)
        running = self.running()
        if not running:
            return
        name = self.rng.choice(running)
        action = self.rng.choice(["ask"] * 6 + ["kill", "term", "stop"])
        if action == "ask" or len(running) < 2:  # never all three down at once
            self._ask(name)
            return
        self.events.append(f"{action} {name}")
        if action == "stop":
            self._signal(name, signal.SIGSTOP)
            self.stopped[name] = now + self.rng.uniform(1, 8)  # sometimes past dead_after
        else:
            self.agents[name].stop(signal.SIGKILL if action == "kill" else signal.SIGTERM)
            self.down[name] = now + self.rng.uniform(0.5, 7)

    def _ask(self, name: str) -> None:
        role = self.rng.choice(sorted(CHURN_ROLES))
        try:
            answer = raw_request(self.agents[name].socket, {"op": "credentials", "role": role}, 30)
        except OSError:
            return
        if answer.get("ok"):
            self.served.append((name, answer["lease"]))

    def _signal(self, name: str, sig: int) -> None:
        process = self.agents[name].process
        assert process is not None
        os.kill(process.pid, sig)

    def settle(self) -> None:
        """Everyone back, then restarted once more: no role stays warm."""
        for name in list(self.stopped):
            self._signal(name, signal.SIGCONT)
        self.stopped.clear()
        for name in list(self.down):
            self.start(name)
        self.down.clear()
        for name, made in self.agents.items():
            made.stop()
            self.start(name)


def test_churn_every_user_deleted_once_none_early_none_left(fleet: Fleet) -> None:
    """3 agents x 20 iam_user roles, one agent's clock 30 s ahead; for 30 s, random
    requests, SIGKILLs, SIGTERMs and SIGSTOPs (some longer than dead_after). Then:
    every user created is deleted exactly once (one DeleteUser that succeeded),
    no served lease's user before the instant it announced (on its issuer's
    clock), and none is left."""
    seed = random.randrange(1_000_000)
    churn = Churn(fleet, seed)
    churn.agents["p"].cli("fleet", "init")
    for name in churn.agents:
        churn.start(name)
    wait_for(lambda: all(joined(a) for a in churn.agents.values()), message="all joined")
    started = time.monotonic()
    while time.monotonic() - started < CHURN_SECONDS:
        churn.step(time.monotonic())
        time.sleep(churn.rng.uniform(0.1, 0.4))
    churned = time.monotonic()
    churn.settle()
    settled = time.monotonic()
    assert churn.served, f"seed {seed}: nothing was served"
    latest = max(parse_rfc3339(lease["expires_at"]) - churn.skew[n] for n, lease in churn.served)
    wait_for(
        lambda: not temp_users(fleet.aws),
        timeout=max(latest - time.time(), 0) + 45,
        interval=1,
        message=f"every user deleted (seed {seed}, events {churn.events})",
    )
    where = f"seed {seed}, events {churn.events}"
    for user in fleet.created_users():
        assert len(fleet.deleted(user)) == 1, f"{user} deleted {fleet.deleted(user)} ({where})"
    for name, lease in churn.served:
        user = fleet.user_of(lease["id"])
        announced = parse_rfc3339(lease["expires_at"]) - churn.skew[name]  # on the true clock
        (deleted_at,) = fleet.deleted(user)
        assert deleted_at >= announced, (
            f"{user} deleted {announced - deleted_at:.1f}s early ({where})"
        )
    logs = "".join(a.log() for a in churn.agents.values())
    assert "Traceback" not in logs
    print(
        f"churn seed {seed}: {len(churn.served)} served, {len(fleet.created_users())} users, "
        f"{logs.count('fleet.takeover ')} takeovers, events {churn.events}; "
        f"churn {churned - started:.0f}s, settle {settled - churned:.0f}s, "
        f"drain {time.monotonic() - settled:.0f}s"
    )


def test_a_takeover_whose_claimer_died_is_inherited_and_finished(fleet: Fleet) -> None:
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
        status = fleet_status(c)
        c_id = c.request("status")["agent"]["id"]
        assert status["unfinished_takeovers"] == []
        assert [p["owner"] for p in status["pending"]] == [c_id]
        assert {x["taken_over_by"] for x in status["agents"] if not x["me"]} == {c_id}
    finally:
        own.stop()
