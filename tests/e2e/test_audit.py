"""The audit log: one line per request with the asking process (pid, exe), the
role, lease and key id, and the outcome; 0600; never a secret; readable with
`dyncreds audit`."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Callable

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import SHIM, AgentProcess, iam_user_role, wait_for

pytestmark = pytest.mark.e2e


def test_audit_log_names_the_asking_process_and_no_secret(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    shim = subprocess.Popen([SHIM, "ec2"], env=agent.env, stdout=subprocess.PIPE, text=True)
    out, _ = shim.communicate(timeout=60)
    creds = json.loads(out)
    assert not agent.request("credentials", role="nope")["ok"]
    assert agent.request("revoke", role="ec2")["ok"]
    path = agent.state_dir / "audit.jsonl"
    wait_for(
        lambda: path.exists() and len(path.read_text().splitlines()) >= 3,
        message="three audit lines",
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert creds["SecretAccessKey"] not in text  # never a secret
    lines = [json.loads(line) for line in text.splitlines()]
    served, unknown, revoked = lines[:3]
    assert served["op"] == "credential_process" and served["outcome"] == "ok"
    assert served["role"] == "ec2" and served["access_key_id"] == creds["AccessKeyId"]
    assert served["peer"]["pid"] == shim.pid  # the shim itself (it execs, keeping its pid)
    assert "python" in served["peer"]["exe"] and "dyncreds" in served["peer"]["cmdline"]
    assert len(served["peer"]["cmdline"]) <= 256
    assert unknown["outcome"] == "unknown_role" and unknown["role"] == "nope"
    assert revoked["op"] == "revoke" and revoked["outcome"] == "ok"
    table = agent.cli("audit", "--role", "ec2").stdout
    assert "credential_process" in table and "revoke" in table and "nope" not in table
    assert json.loads(agent.cli("audit", "--json", "--since", "1h").stdout)[0]["op"] == (
        "credential_process"
    )
