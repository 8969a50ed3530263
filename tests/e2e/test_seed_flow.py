"""The seed's walk-through on the command line: configure the root, create a role
from a policy file, press "Generate", use the keys."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import botocore.exceptions
import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import EC2_ONLY, AgentProcess, temp_users, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def dyncreds(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dyncreds", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_seed_flow(aws: StandIn, short_dir: Path, tmp_path: Path) -> None:
    config_dir = short_dir / "config"
    env = dict(
        os.environ,
        DYNCREDS_CONFIG_DIR=str(config_dir),
        DYNCREDS_STATE_DIR=str(short_dir / "state"),
        DYNCREDS_SOCKET=str(short_dir / "agent.sock"),
    )
    # 1. A starter config, then the root user's keys (the secret from stdin, never argv).
    assert dyncreds(env, "init").returncode == 0
    configured = dyncreds(
        env,
        "configure",
        "root",
        "--access-key-id",
        aws.admin_keys["AccessKeyId"],
        "--secret-stdin",
        "--region",
        "us-east-1",
        "--iam-endpoint",
        aws.endpoint,
        "--sts-endpoint",
        aws.endpoint,
        stdin=aws.admin_keys["SecretAccessKey"] + "\n",
    )
    assert configured.returncode == 0, configured.stderr
    assert "agent not running" in configured.stdout
    creds = config_dir / "root-credentials.toml"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    leaked = aws.admin_keys["SecretAccessKey"] in configured.stdout + configured.stderr
    assert not leaked  # a bool, so a failure does not print the secret
    # 2. A role from a pasted policy (a file here), validated before it is written.
    policy = tmp_path / "ec2.json"
    policy.write_text(json.dumps(EC2_ONLY, indent=2))
    created = dyncreds(
        env,
        "role",
        "create",
        "ec2-full",
        "--type",
        "iam_user",
        "--policy-file",
        str(policy),
        "--ttl",
        "1h",
    )
    assert created.returncode == 0, created.stderr
    assert dyncreds(env, "check").returncode == 0
    # 3. The agent, then "Generate".
    log = open(short_dir / "agent.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "agent"], env=env, stdout=log, stderr=log
    )
    try:
        wait_for(lambda: dyncreds(env, "status").returncode == 0, message="agent up")
        generated = dyncreds(env, "creds", "ec2-full")
        assert generated.returncode == 0, generated.stderr
        keys = json.loads(generated.stdout)["credentials"]
        # 4. Use them: EC2 allowed, S3 denied, and they are the new user's.
        client = {
            "aws_access_key_id": keys["AccessKeyId"],
            "aws_secret_access_key": keys["SecretAccessKey"],
        }
        (user,) = temp_users(aws)
        assert aws.client("sts", **client).get_caller_identity()["Arn"].endswith(user)
        aws.client("ec2", **client).describe_instances()
        with pytest.raises(botocore.exceptions.ClientError):
            aws.client("s3", **client).list_buckets()
        # A second role created while the agent runs is live at once.
        second = dyncreds(env, "role", "create", "tokens", "--type", "session_token")
        assert "agent reloaded" in second.stdout
        assert dyncreds(env, "creds", "tokens").returncode == 0
        assert dyncreds(env, "revoke", "--all").returncode == 0
        assert temp_users(aws) == []
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_configure_root_refuses_to_prompt_without_a_terminal(short_dir: Path) -> None:
    env = dict(os.environ, DYNCREDS_CONFIG_DIR=str(short_dir / "c"))
    result = dyncreds(env, "configure", "root", stdin="")
    assert result.returncode == 2
    assert "--secret-stdin" in result.stderr


@pytest.mark.skipif(
    shutil.which("jq") is None or (shutil.which("socat") is None and shutil.which("nc") is None),
    reason="jq and socat (or nc) not installed",
)
def test_contrib_status_script(aws: StandIn, short_dir: Path) -> None:
    from tests.conftest import iam_user_role

    agent = AgentProcess(short_dir, aws, {"ec2": iam_user_role()}).start()
    try:
        agent.request("credentials", role="ec2")
        script = ROOT / "contrib" / "dyncreds-status"
        line = subprocess.run(
            [str(script)], env=agent.env, capture_output=True, text=True, timeout=30
        )
        assert line.stdout.startswith("dyncreds: 1 roles, 1 leases"), line.stderr
        role = subprocess.run(
            [str(script), "ec2"], env=agent.env, capture_output=True, text=True, timeout=30
        )
        assert role.stdout.startswith("ec2 ready ")
    finally:
        agent.stop()
