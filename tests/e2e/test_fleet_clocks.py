"""The fleet under paused processes and skewed clocks: real agents on moto,
SIGSTOP/SIGCONT, and libfaketime on one agent process; and a dead agent's tag
swept by the peer that took it over. No user outlives its record, and none is
deleted before the instant its lease announced, on its issuer's clock."""

from __future__ import annotations

import os
import signal
import threading
import time
from functools import partial
from typing import Any

import pytest

from dyncreds.protocol import parse_rfc3339
from tests.conftest import temp_users, wait_for
from tests.e2e.fleetrig import (
    ROLE,
    FleetRig,
    faketime,
    fleet_status,
    joined,
    lease_of,
    took_over,
    user_exists,
)
from tests.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.e2e


def test_a_paused_agent_deletes_the_user_it_created_after_its_record_was_taken(
    fleet: FleetRig,
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
            wait_for(lambda: took_over(b), timeout=30, message="b takes a over")
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


def test_clocks_off_by_seconds_or_minutes(fleet: FleetRig) -> None:
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
    wait_for(lambda: took_over(b), timeout=30, message="b takes s over")
    wait_for(lambda: fleet.deleted(user), timeout=120, interval=0.5, message="revoked")
    (deleted_at,) = fleet.deleted(user)
    assert deleted_at >= announced + 30, "revoked before the instant s announced"
    assert deleted_at <= announced + 30 + 15


def test_a_dead_agents_tag_is_swept_by_the_peer_that_took_it_over(fleet: FleetRig) -> None:
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


def test_a_resumed_zombie_checks_before_it_serves_a_lease_taken_from_it(
    fleet: FleetRig,
) -> None:
    """a serves a lease, then is stopped (SIGSTOP) for longer than dead_after; b
    takes it over. The first request after SIGCONT waits for a check with the
    table: the lease b now owns is not served again, a new one is."""
    a, b = fleet.agent("a"), fleet.agent("b")
    a.cli("fleet", "init")
    a.start()
    b.start()
    wait_for(lambda: joined(a) and joined(b), message="both joined")
    held = lease_of(a)
    assert a.process is not None
    os.kill(a.process.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: took_over(b), timeout=30, message="b takes a over")
    finally:
        os.kill(a.process.pid, signal.SIGCONT)
    assert lease_of(a)["id"] != held["id"]
    assert "fleet.check_after_gap" in a.log() and "fleet.taken_over" in a.log()
