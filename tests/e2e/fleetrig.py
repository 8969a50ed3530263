"""A fleet of real agent processes sharing one DynamoDB table on moto's server
(IAM with enforcement, and DynamoDB), every AWS request of every agent through
one recording proxy; helpers the fleet's end-to-end tests share."""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, iam_user_role
from tests.faultproxy import FaultProxy

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


class FleetRig:
    """The fleet's table behind one recording proxy, and its agents."""

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


def user_exists(aws: StandIn, name: str) -> bool:
    return any(u["UserName"] == name for u in aws.client("iam").list_users()["Users"])


def lease_of(agent: AgentProcess, role: str = "r") -> dict[str, str]:
    result = agent.request("credentials", role=role)
    assert result["ok"], result
    return dict(result["lease"])


TOOK_OVER = re.compile(r"event=fleet\.takeover(?= |$)", re.M)


def took_over(*agents: AgentProcess) -> bool:
    """Has one of these agents finished taking a dead peer over? (Its log's
    ``fleet.takeover``; not ``fleet.takeover_lost``, the loser's line.)"""
    return any(TOOK_OVER.search(a.log()) for a in agents)


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
