""" "Revocation that tells the truth", the promises no other test pinned: an IAM
user's revocation says `deleted` and the user is gone; a root without
iam:PutRolePolicy (or, for federation tokens, iam:PutUserPolicy) gets an error
naming it; leases of other roles that a session
deny just killed are dropped, so their clients get fresh ones."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import iam_user_role, make_assumable_role, temp_users
from tests.e2e.conftest import Rig
from tests.e2e.test_vault_parity import FEDERATION, assumed
from tests.faultproxy import Fault

pytestmark = pytest.mark.e2e


def test_an_iam_user_revocation_says_deleted_and_the_user_is_gone(
    aws: StandIn, rig: Callable[..., Rig]
) -> None:
    agent = rig({"ec2": iam_user_role()}).start()
    assert agent.request("credentials", role="ec2")["ok"]
    assert len(temp_users(aws)) == 1
    out = agent.cli("revoke", "--role", "ec2").stdout
    assert "deleted" in out, out
    assert temp_users(aws) == []


@pytest.mark.parametrize("kind", ["assumed_role", "federation_token"])
def test_a_root_without_the_put_policy_permission_is_told_which(
    aws: StandIn, rig: Callable[..., Rig], kind: str
) -> None:
    """An assumed_role role's deny goes on its role (PutRolePolicy), a federation
    token's on the root user that issued it (PutUserPolicy): each refusal names
    the permission AWS wants, and no revocation is claimed."""
    role, action = (
        (assumed(make_assumable_role(aws), "revoke_sessions = true\n"), "PutRolePolicy")
        if kind == "assumed_role"
        else (FEDERATION, "PutUserPolicy")
    )
    made = rig({"deploy": role})
    agent = made.start()
    assert agent.request("credentials", role="deploy")["ok"]
    made.proxy.add(Fault(frozenset({action}), error="AccessDenied", status=403))
    result = agent.cli("revoke", "--role", "deploy", check=False)
    text = result.stdout + result.stderr
    assert f"iam:{action}" in text, text
    assert "denied from" not in text  # never claimed


def test_leases_the_deny_killed_are_dropped_in_other_roles(
    aws: StandIn, rig: Callable[..., Rig]
) -> None:
    arn = make_assumable_role(aws)
    agent = rig({"deploy": assumed(arn, "revoke_sessions = true\n"), "plain": assumed(arn)}).start()
    assert agent.request("credentials", role="deploy")["ok"]
    before = agent.request("credentials", role="plain")["lease"]["id"]
    assert "denied from" in agent.cli("revoke", "--role", "deploy").stdout
    after = agent.request("credentials", role="plain")["lease"]["id"]
    assert after != before  # the deny killed plain's session too: a fresh one
