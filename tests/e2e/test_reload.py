"""Reload (SIGHUP or `dyncreds reload`): added, removed, changed, broken."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, iam_user_role, temp_users, wait_for

pytestmark = pytest.mark.e2e


def test_added_role_appears_on_sighup(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"a": iam_user_role()})
    agent.write_role("b", 'credential_type = "session_token"\n')
    assert agent.process is not None
    agent.process.send_signal(signal.SIGHUP)
    wait_for(lambda: agent.request("credentials", role="b")["ok"], message="role b served")


def test_removed_role_stops_being_served_and_lease_retires(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent({"a": iam_user_role(), "keep": 'credential_type = "session_token"\n'})
    lease = agent.request("credentials", role="a")["lease"]
    (agent.config_dir / "roles" / "a.toml").unlink()
    assert agent.request("reload")["roles"] == ["keep"]
    assert agent.request("credentials", role="a")["error"]["code"] == "unknown_role"
    # Its user lives to the expiry it announced, tracked for revocation.
    retiring = agent.request("status")["retiring"]
    assert [r["lease_id"] for r in retiring] == [lease["id"]]
    assert retiring[0]["revoke_at"] == lease["expires_at"]
    assert len(temp_users(aws)) == 1
    assert agent.request("revoke", lease_id=lease["id"])["ok"]
    assert temp_users(aws) == []


def test_changed_role_gets_new_lease_on_next_use(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent({"a": iam_user_role()})
    first = agent.request("credentials", role="a")["lease"]["id"]
    agent.write_role("a", iam_user_role(extra='ttl = "2h"'))
    agent.request("reload")
    second = agent.request("credentials", role="a")["lease"]["id"]
    assert second != first
    assert len(temp_users(aws)) == 2  # the old one retires at its announced expiry


def test_broken_file_keeps_last_good_config_and_is_shown(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent({"a": iam_user_role()})
    agent.write_role("a", 'credential_type = "iam_user"\nbogus = 1\n')
    reply = agent.request("reload")
    assert reply["ok"] is False
    assert "a.toml:2: unknown key bogus" in reply["error"]["message"]
    assert "previous one stays" in reply["error"]["message"]
    assert agent.request("credentials", role="a")["ok"]
    assert "a.toml:2" in agent.request("status")["agent"]["reload_error"]
    cli = agent.cli("reload", check=False)
    assert cli.returncode == 1 and "a.toml:2" in cli.stderr
    agent.write_role("a", iam_user_role())
    assert agent.request("reload")["ok"]
    assert agent.request("status")["agent"]["reload_error"] is None
