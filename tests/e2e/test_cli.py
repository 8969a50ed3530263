"""The `dyncreds` CLI against a real agent on moto's server."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import EC2_ONLY, SHIM, AgentProcess, iam_user_role, temp_users

pytestmark = pytest.mark.e2e

PRINT_IDENTITY = (
    "import boto3, os; print(boto3.client('sts', endpoint_url=os.environ['EP'])"
    ".get_caller_identity()['Arn'])"
)


def test_creds_in_every_format(aws: StandIn, start_agent: Callable[..., AgentProcess]) -> None:
    agent = start_agent({"ec2": iam_user_role(extra='region = "eu-west-1"')})
    body = json.loads(agent.cli("creds", "ec2").stdout)
    key = body["credentials"]["AccessKeyId"]
    assert body["lease"]["id"].startswith("ec2/")
    env = agent.cli("creds", "ec2", "--format", "env").stdout
    # Compared as booleans: a failing assertion must not print the secret key.
    assert (
        f"export AWS_ACCESS_KEY_ID={key}" in env,
        "export AWS_REGION=eu-west-1" in env,
        "AWS_SESSION_TOKEN" in env,
    ) == (True, True, False)  # iam_user keys have no token
    ini = configparser.ConfigParser()
    ini.read_string(agent.cli("creds", "ec2", "--format", "ini").stdout)
    assert ini["ec2"]["aws_access_key_id"] == key
    process = json.loads(agent.cli("creds", "ec2", "--format", "credential-process").stdout)
    assert process["Version"] == 1 and process["AccessKeyId"] == key


def test_exec_runs_command_with_credentials_and_its_status(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    env = dict(agent.env, EP=aws.endpoint)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dyncreds",
            "exec",
            "ec2",
            "--",
            sys.executable,
            "-c",
            PRINT_IDENTITY,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (user,) = temp_users(aws)
    assert result.stdout.strip().endswith(f":user/{user}")
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "dyncreds",
            "exec",
            "ec2",
            "--env",  # static variables, as 0.1 gave them
            "--",
            sys.executable,
            "-c",
            "import os, sys; assert os.environ['AWS_CREDENTIAL_EXPIRATION'].endswith('Z'); "
            "sys.exit(7)",
        ],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert status.returncode == 7


def test_aws_config_output_is_usable_as_is(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    text = agent.cli("aws-config", "ec2").stdout
    # This install's own Python runs its shim with -I -S -X utf8: no /bin/sh hop.
    assert f"credential_process = {sys.executable} -I -S -X utf8 {SHIM} ec2" in text
    config = tmp_path / "cfg"
    config.write_text(text)
    env = dict(agent.env, AWS_CONFIG_FILE=str(config), AWS_PROFILE="ec2", EP=aws.endpoint)
    result = subprocess.run(
        [sys.executable, "-c", PRINT_IDENTITY], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert ":user/dyncreds-" in result.stdout


def test_exit_codes(
    aws: StandIn, start_agent: Callable[..., AgentProcess], short_dir: Path
) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    unknown = agent.cli("creds", "nope", check=False)
    assert unknown.returncode == 1
    assert "unknown role 'nope'" in unknown.stderr
    usage = agent.cli("revoke", check=False)
    assert usage.returncode == 2
    agent.stop()
    down = agent.cli("status", check=False)
    assert down.returncode == 3
    assert "dyncreds agent" in down.stderr and "start it with" in down.stderr


def test_status_table_and_json(aws: StandIn, start_agent: Callable[..., AgentProcess]) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    agent.request("credentials", role="ec2")
    table = agent.cli("status").stdout
    assert "ROLE" in table and "ec2" in table and "ready" in table
    assert "arn:aws:iam::123456789012:user/vaultuser" in table
    status = json.loads(agent.cli("status", "--json").stdout)
    assert status["roles"][0]["lease_id"].startswith("ec2/")
    assert status["root"]["arn"].endswith(":user/vaultuser")


def test_role_create_validates_writes_and_reloads(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    agent = start_agent({})
    policy = tmp_path / "ec2.json"
    policy.write_text(json.dumps(EC2_ONLY))
    bad = agent.cli(
        "role",
        "create",
        "web",
        "--type",
        "session_token",
        "--policy-file",
        str(policy),
        check=False,
    )
    assert bad.returncode == 2 and "not allowed" in bad.stderr
    assert not (agent.config_dir / "roles" / "web.toml").exists()
    made = agent.cli(
        "role", "create", "web", "--type", "iam_user", "--policy-file", str(policy), "--ttl", "30m"
    )
    assert "agent reloaded" in made.stdout
    assert "web" in agent.cli("role", "list").stdout
    assert "iam_user" in agent.cli("role", "show", "web").stdout
    assert agent.request("credentials", role="web")["ok"]
    agent.cli("role", "delete", "web")
    assert agent.request("credentials", role="web")["error"]["code"] == "unknown_role"


def test_broken_reload_keeps_previous_configuration(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    agent.write_role("broken", 'credential_type = "iam_user"\nttl = "forever"\n')
    reply = agent.request("reload")
    assert reply["error"]["code"] == "bad_request"
    assert "broken.toml:2" in reply["error"]["message"]
    assert agent.request("credentials", role="ec2")["ok"]
    assert "broken.toml" in agent.request("status")["agent"]["reload_error"]
