"""Nothing leaks, nothing stale: SIGKILL at every step, AWS faults, IAM key
propagation, orphans, rotate-root. Faults are injected at the edge by a proxy
between the agent and moto's server."""

from __future__ import annotations

import json
import os
import random
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import iam_user_role, raw_request, temp_users, wait_for
from tests.e2e.conftest import Rig
from tests.faultproxy import Fault

pytestmark = pytest.mark.e2e

ISSUE_STEPS = [
    "CreateUser",
    "PutUserPolicy",
    "AttachUserPolicy",
    "AddUserToGroup",
    "CreateAccessKey",
    "GetCallerIdentity",
]
REVOKE_STEPS = [
    "ListAccessKeys",
    "DeleteAccessKey",
    "ListAttachedUserPolicies",
    "DetachUserPolicy",
    "ListUserPolicies",
    "DeleteUserPolicy",
    "ListGroupsForUser",
    "RemoveUserFromGroup",
    "DeleteLoginProfile",
    "DeleteUser",
]


def group_and_policy(aws: StandIn) -> str:
    iam = aws.client("iam")
    iam.create_group(GroupName="developers")
    arn: str = iam.create_policy(
        PolicyName="describe",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}],
            }
        ),
    )["Policy"]["Arn"]
    return iam_user_role(extra=f'policy_arns = ["{arn}"]\niam_groups = ["developers"]\n')


def assert_nothing_left(aws: StandIn) -> None:
    iam = aws.client("iam")
    assert temp_users(aws) == []
    assert iam.get_group(GroupName="developers")["Users"] == []
    keys = iam.list_access_keys(UserName="vaultuser")["AccessKeyMetadata"]
    assert len(keys) == 1  # only the root's


def kill_fault(aws: StandIn, step: str, when: str) -> Fault:
    """Kill the agent around ``step`` - of an issuance or revocation, not the
    agent's own identity check, which also calls GetCallerIdentity."""
    root = aws.admin_keys["AccessKeyId"]
    return Fault(
        actions=frozenset({step}),
        kill=when,
        times=1,
        only_key=(lambda key: key != root) if step == "GetCallerIdentity" else None,
    )


def ask_and_expect_death(made: Rig, role: str = "r") -> None:
    try:
        raw_request(made.agent.socket, {"op": "credentials", "role": role}, timeout=30)
    except (OSError, ValueError):
        pass  # the agent died mid-request
    wait_for(made.dead, message="agent killed by the proxy")


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", ISSUE_STEPS)
def test_kill_during_issuance_leaves_nothing_after_restart(
    aws: StandIn,
    rig: Callable[..., Rig],
    step: str,
    when: str,
) -> None:
    made = rig({"r": group_and_policy(aws)})
    made.proxy.add(kill_fault(aws, step, when))
    made.start()
    ask_and_expect_death(made)
    made.agent.stop()
    made.start()  # recovery: a half-created user is cleaned up at once
    wait_for(lambda: temp_users(aws) == [], message="half-created user cleaned up")
    wait_for(lambda: made.journal_rows() == [], message="journal emptied")
    assert_nothing_left(aws)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", REVOKE_STEPS)
def test_kill_during_revocation_finishes_after_restart(
    aws: StandIn,
    rig: Callable[..., Rig],
    step: str,
    when: str,
) -> None:
    made = rig({"r": group_and_policy(aws)})
    agent = made.start()
    lease = agent.request("credentials", role="r")["lease"]["id"]
    (user,) = temp_users(aws)
    aws.client("iam").create_login_profile(UserName=user, Password="Hunter2-Hunter2!")
    made.proxy.add(kill_fault(aws, step, when))
    try:
        raw_request(agent.socket, {"op": "revoke", "lease_id": lease}, timeout=30)
    except (OSError, ValueError):
        pass
    wait_for(made.dead, message="agent killed during revocation")
    agent.stop()
    made.start()
    wait_for(lambda: temp_users(aws) == [], message="revocation finished after restart")
    assert_nothing_left(aws)


def test_served_lease_outlives_a_kill_until_its_announced_expiry(
    aws: StandIn,
    rig: Callable[..., Rig],
) -> None:
    made = rig({"r": iam_user_role(extra='ttl = "60s"\nmax_ttl = "60s"\n')})
    agent = made.start()
    body = agent.request("credentials", role="r")
    expires = body["lease"]["expires_at"]
    made.kill()
    agent.stop()
    made.start()
    status = agent.request("status")
    assert [r["revoke_at"] for r in status["retiring"]] == [expires]
    assert len(temp_users(aws)) == 1  # the promise holds after restart
    key = aws.client(
        "sts",
        aws_access_key_id=body["credentials"]["AccessKeyId"],
        aws_secret_access_key=body["credentials"]["SecretAccessKey"],
    )
    key.get_caller_identity()
    wait_for(
        lambda: temp_users(aws) == [],
        timeout=90,
        interval=0.5,
        message="revoked at announced expiry",
    )
    from dyncreds.protocol import parse_rfc3339

    assert time.time() >= parse_rfc3339(expires)


def test_randomized_kills(aws: StandIn, rig: Callable[..., Rig]) -> None:
    made = rig({"r": group_and_policy(aws)})
    chooser = random.Random(int(os.environ.get("DYNCREDS_KILL_SEED", "20261129")))
    agent = made.start()
    for _ in range(8):
        step = chooser.choice(ISSUE_STEPS + REVOKE_STEPS)
        when = chooser.choice(["before", "after"])
        made.proxy.clear()
        made.proxy.add(kill_fault(aws, step, when))
        try:
            body = raw_request(agent.socket, {"op": "credentials", "role": "r"}, timeout=30)
            if body.get("ok"):
                raw_request(agent.socket, {"op": "revoke", "role": "r"}, timeout=30)
        except (OSError, ValueError):
            pass
        if made.dead():
            agent.stop()
            made.proxy.clear()
            made.start()
    made.proxy.clear()

    def revoke_all() -> bool:
        # A kill from the last round may land just now: restart and try again.
        if made.dead():
            agent.stop()
            made.start()
        try:
            return bool(agent.request("revoke", all=True)["ok"])
        except OSError:
            return False

    wait_for(revoke_all, message="revoke --all on a live agent")
    wait_for(lambda: temp_users(aws) == [], message="everything cleaned up")
    assert_nothing_left(aws)


def test_throttling_keeps_valid_leases_fails_new_issuance_fast_and_recovers(
    aws: StandIn,
    rig: Callable[..., Rig],
) -> None:
    made = rig(
        {"warm": iam_user_role(), "cold": iam_user_role()},
        agent='issue_timeout = "20s"\naws_call_timeout = "5s"\n',
    )
    config = made.agent.config_dir / "config.toml"
    config.write_text(
        config.read_text().replace('region = "us-east-1"', 'region = "us-east-1"\nmax_retries = 2')
    )
    agent = made.start()
    warm = agent.request("credentials", role="warm")
    assert warm["ok"]
    fault = made.proxy.add(Fault(error="Throttling"))
    # Valid leases are still served, from memory.
    again = agent.request("credentials", role="warm")
    assert again["credentials"]["AccessKeyId"] == warm["credentials"]["AccessKeyId"]
    started = time.monotonic()
    cold = agent.request("credentials", role="cold")
    elapsed = time.monotonic() - started
    assert cold["ok"] is False
    assert cold["error"]["code"] == "upstream"
    assert "Throttling" in cold["error"]["message"]
    assert elapsed < 25
    assert fault.hits > 1  # botocore retried before giving up
    made.proxy.clear()
    assert agent.request("credentials", role="cold")["ok"]  # recovered
    assert "Throttling" not in json.dumps(agent.request("status")["roles"][0])


def test_5xx_and_failed_revocation_are_retried_and_shown(
    aws: StandIn,
    rig: Callable[..., Rig],
) -> None:
    made = rig({"r": iam_user_role()})
    agent = made.start()
    lease = agent.request("credentials", role="r")["lease"]["id"]
    made.proxy.add(Fault(actions=frozenset({"DeleteUser"}), error="ServiceFailure", status=500))
    reply = agent.request("revoke", lease_id=lease)
    assert reply["ok"] is False and reply["error"]["code"] == "upstream"
    retiring = agent.request("status")["retiring"]
    assert retiring[0]["attempts"] >= 1 and "ServiceFailure" in retiring[0]["last_error"]
    made.proxy.clear()
    assert agent.request("revoke", lease_id=lease)["ok"]
    assert temp_users(aws) == []


def test_revoke_force_forgets_an_irrevocable_lease(aws: StandIn, rig: Callable[..., Rig]) -> None:
    made = rig({"r": iam_user_role()})
    agent = made.start()
    lease = agent.request("credentials", role="r")["lease"]["id"]
    made.proxy.add(Fault(actions=frozenset({"ListAccessKeys"}), error="AccessDenied"))
    assert agent.request("revoke", lease_id=lease)["ok"] is False
    forced = agent.request("revoke", lease_id=lease, force=True)
    assert forced["revoked"] == [lease]
    assert agent.request("status")["retiring"] == []
    assert made.journal_rows() == []


def test_new_key_is_not_served_before_it_works(aws: StandIn, rig: Callable[..., Rig]) -> None:
    made = rig({"r": iam_user_role()}, agent="propagation_checks = 2\n")
    root_key = aws.admin_keys["AccessKeyId"]
    fault = made.proxy.add(
        Fault(
            actions=frozenset({"GetCallerIdentity"}),
            error="InvalidClientTokenId",
            status=403,
            times=4,
            only_key=lambda key: key != root_key,
        )
    )
    agent = made.start()
    body = agent.request("credentials", role="r")
    assert body["ok"], body
    key = body["credentials"]["AccessKeyId"]
    assert fault.hits == 4
    checks = [c for c in made.proxy.calls if c.key_id == key]
    # Rejected four times, then worked twice in a row before being handed out.
    assert [c.status for c in checks] == [403] * 4 + [200, 200]
    aws.client(
        "sts", aws_access_key_id=key, aws_secret_access_key=body["credentials"]["SecretAccessKey"]
    ).get_caller_identity()


def test_propagation_wait_is_visible_in_status(aws: StandIn, rig: Callable[..., Rig]) -> None:
    made = rig({"r": iam_user_role()}, agent='propagation_timeout = "30s"\n')
    root_key = aws.admin_keys["AccessKeyId"]
    made.proxy.add(
        Fault(
            actions=frozenset({"GetCallerIdentity"}),
            error="InvalidClientTokenId",
            status=403,
            only_key=lambda key: key != root_key,
        )
    )
    agent = made.start()
    import threading

    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(agent.request("credentials", role="r")))
    thread.start()
    wait_for(
        lambda: "propagate" in agent.request("status")["roles"][0]["next_action"],
        message="status shows the propagation wait",
    )
    made.proxy.clear()
    thread.join(timeout=30)
    assert result["ok"]


def test_orphan_sweep_adopts_own_untracked_users_only(
    aws: StandIn,
    rig: Callable[..., Rig],
) -> None:
    made = rig({"r": iam_user_role()}, agent='orphan_min_age = "0s"\n')
    agent = made.start()
    assert agent.request("credentials", role="r")["ok"]
    [user] = temp_users(aws)
    agent.stop()
    (agent.state_dir / "journal.sqlite3").unlink()  # the journal is lost
    for extra in ("-wal", "-shm"):
        (agent.state_dir / f"journal.sqlite3{extra}").unlink(missing_ok=True)
    iam = aws.client("iam")
    iam.create_user(
        UserName="someone-elses", Tags=[{"Key": "dyncreds:agent", "Value": "another-agent"}]
    )
    made.start()
    retiring = wait_for(
        lambda: agent.request("status")["retiring"],
        timeout=30,
        message="own orphan adopted",
    )
    # Ours is tracked again, to be revoked at the expiry it announced (its tag) -
    # test_faults.py waits for that; the other agent's user is never touched.
    assert [r["user_name"] for r in retiring] == [user]
    tags = {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=user)["Tags"]}
    assert retiring[0]["revoke_at"] == tags["dyncreds:expires"]
    assert sorted(temp_users(aws)) == sorted([user, "someone-elses"])


# --------------------------------------------------------------------------- rotate-root


def root_keys(aws: StandIn) -> list[str]:
    return [
        k["AccessKeyId"]
        for k in aws.client("iam").list_access_keys(UserName="vaultuser")["AccessKeyMetadata"]
    ]


def creds_file(made: Rig) -> Path:
    return made.agent.config_dir / "root-credentials.toml"


def file_key_id(made: Rig) -> str:
    """The access key id in the root credentials file (never its secret, which a
    failing assertion would print)."""
    import tomllib

    return str(tomllib.loads(creds_file(made).read_text())["access_key_id"])


def follow_rotation(aws: StandIn, made: Rig) -> None:
    """The test's admin client uses whatever key the agent now has in its file."""
    import tomllib

    data = tomllib.loads(creds_file(made).read_text())
    aws.admin_keys = {
        "AccessKeyId": data["access_key_id"],
        "SecretAccessKey": data["secret_access_key"],
    }


def test_rotate_root_end_to_end(aws: StandIn, rig: Callable[..., Rig]) -> None:
    made = rig({"r": iam_user_role()})
    agent = made.start()
    old = aws.admin_keys["AccessKeyId"]
    reply = agent.request("rotate_root")
    assert reply["ok"], reply
    new = reply["access_key_id"]
    assert new != old
    follow_rotation(aws, made)
    assert root_keys(aws) == [new]
    assert file_key_id(made) == new
    assert stat.S_IMODE(creds_file(made).stat().st_mode) == 0o600
    assert agent.request("credentials", role="r")["ok"]  # the agent works on the new key
    assert agent.request("status")["root"]["arn"].endswith(":user/vaultuser")
    made.agent.stop()
    made.start()  # and so does a restarted one
    assert agent.request("revoke", all=True)["ok"]


def test_rotate_root_refuses_when_two_keys_exist(aws: StandIn, rig: Callable[..., Rig]) -> None:
    made = rig({})
    agent = made.start()
    aws.client("iam").create_access_key(UserName="vaultuser")
    reply = agent.request("rotate_root")
    assert reply["ok"] is False
    assert "already has two access keys" in reply["error"]["message"]
    assert len(root_keys(aws)) == 2


@pytest.mark.parametrize("failure", ["create", "prove", "delete_old"])
def test_rotate_root_failure_leaves_working_root(
    aws: StandIn,
    rig: Callable[..., Rig],
    failure: str,
) -> None:
    made = rig({"r": iam_user_role()}, agent='propagation_timeout = "3s"\n')
    agent = made.start()
    old = aws.admin_keys["AccessKeyId"]
    if failure == "create":
        made.proxy.add(Fault(actions=frozenset({"CreateAccessKey"}), error="LimitExceeded"))
    elif failure == "prove":
        made.proxy.add(
            Fault(
                actions=frozenset({"GetCallerIdentity"}),
                error="InvalidClientTokenId",
                status=403,
                only_key=lambda key: key != old,
            )
        )
    else:
        made.proxy.add(
            Fault(actions=frozenset({"DeleteAccessKey"}), error="ServiceFailure", status=500)
        )
    reply = agent.request("rotate_root")
    assert reply["ok"] is False
    assert reply["error"]["code"] == "upstream"
    made.proxy.clear()
    follow_rotation(aws, made)
    keys = root_keys(aws)
    assert len(keys) <= 2  # at most one extra key
    if failure == "delete_old":
        assert "AWS did not delete the old key" in reply["error"]["message"]
        assert file_key_id(made) != old  # switched to the new key
    else:
        assert keys == [old]
        assert file_key_id(made) == old
    assert agent.request("credentials", role="r")["ok"]  # root still works


def test_sigterm_finishes_in_flight_request_and_restart_keeps_promises(
    aws: StandIn,
    rig: Callable[..., Rig],
) -> None:
    import signal
    import threading

    made = rig({"r": iam_user_role()})
    root_key = aws.admin_keys["AccessKeyId"]
    # The new key "propagates" slowly, so the request is in flight for a while.
    made.proxy.add(
        Fault(
            actions=frozenset({"GetCallerIdentity"}),
            error="InvalidClientTokenId",
            status=403,
            times=6,
            only_key=lambda key: key != root_key,
        )
    )
    agent = made.start()
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(raw_request(agent.socket, {"op": "credentials", "role": "r"}))
    )
    thread.start()
    wait_for(lambda: made.proxy.rejected_per_key, message="issuance under way")
    assert agent.process is not None
    agent.process.send_signal(signal.SIGTERM)
    thread.join(timeout=60)
    assert result.get("ok"), result  # the request in flight was answered
    assert agent.process.wait(timeout=30) == 0
    agent.stop()
    expires = result["lease"]["expires_at"]
    made.start()  # serves again at once, and keeps the old agent's promise
    retiring = agent.request("status")["retiring"]
    assert [(r["lease_id"], r["revoke_at"]) for r in retiring] == [(result["lease"]["id"], expires)]
    assert agent.request("credentials", role="r")["ok"]
