"""Static users on moto with IAM enforcement: the agent's own key of an existing
user works, rotation makes a new one that works while the old one still does,
the user never has more than two keys, a user with two keys of its own is an
error naming it, and a SIGKILL at any rotation step leaves a working served key
and at most one extra key of ours, cleaned up at the next start. (The schedule
itself - rotation when unused, a changed period, rotation after a restart,
deletion at the announced expiry - is tested on trio's mock clock in
test_agent_timing.py: a real rotation period is at least 15 minutes.)"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, wait_for
from tests.e2e.conftest import Rig
from tests.faultproxy import Fault

pytestmark = pytest.mark.e2e

ROLE = 'credential_type = "static_user"\nusername = "legacy-app"\nrotation_period = "1h"\n'
EC2_ONLY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}


def make_user(aws: StandIn, keys: int = 0) -> list[str]:
    iam = aws.client("iam")
    iam.create_user(UserName="legacy-app")
    iam.put_user_policy(
        UserName="legacy-app", PolicyName="ec2", PolicyDocument=json.dumps(EC2_ONLY)
    )
    return [
        iam.create_access_key(UserName="legacy-app")["AccessKey"]["AccessKeyId"]
        for _ in range(keys)
    ]


def keys_of(aws: StandIn) -> list[str]:
    meta = aws.client("iam").list_access_keys(UserName="legacy-app")["AccessKeyMetadata"]
    return sorted(k["AccessKeyId"] for k in meta)


def works(aws: StandIn, creds: dict[str, str]) -> bool:
    return aws.key_rejected(creds["AccessKeyId"], creds["SecretAccessKey"]) is None


def test_rotation_keeps_the_old_key_until_its_announced_expiry(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    # Rotation needs both of IAM's two key slots: the current key, which lives to
    # its announced expiry, and the next one. (A user with a key of its own gets an
    # error naming it: the next test.)
    make_user(aws)
    agent = start_agent({"legacy": ROLE})
    first = agent.request("credentials", role="legacy")
    assert works(aws, first["credentials"])
    assert first["credentials"].get("SessionToken") is None
    rotated = agent.cli("rotate", "legacy").stdout
    assert "stay valid until" in rotated
    second = agent.request("credentials", role="legacy")
    assert second["credentials"]["AccessKeyId"] != first["credentials"]["AccessKeyId"]
    assert works(aws, second["credentials"]) and works(aws, first["credentials"])
    assert keys_of(aws) == sorted(
        [first["credentials"]["AccessKeyId"], second["credentials"]["AccessKeyId"]]
    )
    status = agent.request("status")
    [retiring] = status["retiring"]
    assert retiring["lease_id"] == first["lease"]["id"]
    assert retiring["revoke_at"] == first["lease"]["expires_at"]  # the announced expiry
    # A third rotation before the old key's expiry waits for a slot, naming why.
    refused = agent.request("rotate", role="legacy")
    message = refused["error"]["message"]
    assert not refused["ok"] and "a third is not possible" in message
    assert f"dyncreds revoke {first['lease']['id']}" in message  # what frees a slot now
    assert len(keys_of(aws)) == 2


def test_a_user_with_two_keys_of_its_own_is_an_error_naming_it(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    make_user(aws, keys=2)
    agent = start_agent({"legacy": ROLE})
    answer = agent.request("credentials", role="legacy")
    assert not answer["ok"]
    assert "IAM user legacy-app already has two access keys" in answer["error"]["message"]
    [role] = agent.request("status")["roles"]
    assert "legacy-app" in role["last_error"]
    assert len(keys_of(aws)) == 2


def test_revoking_deletes_only_our_key(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    [foreign] = make_user(aws, keys=1)
    agent = start_agent({"legacy": ROLE})
    creds = agent.request("credentials", role="legacy")["credentials"]
    result = agent.cli("revoke", "--role", "legacy").stdout
    assert "key deleted" in result
    assert keys_of(aws) == [foreign]
    assert not works(aws, creds)


STEPS = ["ListAccessKeys", "CreateAccessKey", "GetCallerIdentity"]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", STEPS)
def test_kill_at_every_rotation_step(
    aws: StandIn, rig: Callable[..., Rig], step: str, when: str
) -> None:
    make_user(aws)
    made = rig({"legacy": ROLE})
    agent = made.start()
    first = agent.request("credentials", role="legacy")["credentials"]
    root = aws.admin_keys["AccessKeyId"]
    made.proxy.add(
        Fault(
            actions=frozenset({step}),
            kill=when,
            times=1,
            only_key=(lambda key: key != root) if step == "GetCallerIdentity" else None,
        )
    )
    try:
        agent.request("rotate", role="legacy")
    except OSError:
        pass  # the agent died mid-request
    wait_for(made.dead, message="agent killed by the proxy")
    made.proxy.clear()
    agent.start()
    # A working served key, and no extra key of ours once the half-done rotation
    # is cleaned up (the secret of the first key died with the agent: the
    # restarted one serves a new key, the first lives to its announced expiry).
    answer = wait_for(
        lambda: (a := agent.request("credentials", role="legacy"))["ok"] and a,
        timeout=30,
        message="a served key (after the cleanup freed a slot)",
    )
    served = answer["credentials"]
    assert works(aws, served)
    wait_for(
        lambda: set(keys_of(aws)) <= {first["AccessKeyId"], served["AccessKeyId"]},
        timeout=30,
        message="the half-created key cleaned up",
    )
    db = sqlite3.connect(agent.state_dir / "journal.sqlite3")
    try:
        journaled = {row[0] for row in db.execute("SELECT access_key_id FROM leases")}
    finally:
        db.close()
    assert set(keys_of(aws)) <= journaled, "a key of ours that no journal knows"


def test_a_retired_static_key_revoked_says_key_deleted(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    make_user(aws)
    agent = start_agent({"legacy": ROLE})
    agent.request("credentials", role="legacy")
    agent.cli("rotate", "legacy")  # the first key retires, journaled, not current
    results = agent.request("revoke", role="legacy")["results"]
    assert len(results) == 2
    assert {r["outcome"] for r in results} == {"key deleted"}  # never a bare "deleted"
