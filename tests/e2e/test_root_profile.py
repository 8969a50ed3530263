"""A root with no static key of its own: a profile whose credential_process hands
out the admin's keys with a short Expiration, switching between two admin users'
keys from one call to the next (as SSO or an assumed role would renew them). The
agent keeps issuing across many refreshes; a provider that fails shows in the
error and in `status`, not as a stack trace; and it recovers without a restart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dyncreds.aws.standin import ADMIN, StandIn
from tests.conftest import AgentProcess, iam_user_role

pytestmark = pytest.mark.e2e

PROVIDER = """\
import json, sys, time
from pathlib import Path
here = Path(sys.argv[1])
if (here / "fail").exists():
    sys.stderr.write("the SSO session has expired\\n")
    sys.exit(1)
keys = json.loads((here / "keys.json").read_text())
calls = here / "calls"
n = len(calls.read_text().splitlines()) if calls.exists() else 0
key = keys[n % len(keys)]
with calls.open("a") as f:
    f.write(key["AccessKeyId"] + "\\n")
expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
print(json.dumps({"Version": 1, "AccessKeyId": key["AccessKeyId"],
                  "SecretAccessKey": key["SecretAccessKey"], "Expiration": expires}))
"""


def test_a_refreshing_profile_root_keeps_issuing_and_says_when_it_cannot(
    aws: StandIn, short_dir: Path, tmp_path: Path
) -> None:
    iam = aws.client("iam")
    iam.create_user(UserName="vaultuser2")
    iam.put_user_policy(
        UserName="vaultuser2", PolicyName="administrator", PolicyDocument=json.dumps(ADMIN)
    )
    second = iam.create_access_key(UserName="vaultuser2")["AccessKey"]
    here = tmp_path / "provider"
    here.mkdir()
    (here / "keys.json").write_text(
        json.dumps(
            [
                {k: aws.admin_keys[k] for k in ("AccessKeyId", "SecretAccessKey")},
                {k: second[k] for k in ("AccessKeyId", "SecretAccessKey")},
            ]
        )
    )
    (here / "provider.py").write_text(PROVIDER)
    (tmp_path / "aws-config").write_text(
        f"[profile root]\ncredential_process = {sys.executable} {here / 'provider.py'} {here}\n"
    )
    agent = AgentProcess(short_dir, aws, {"r": iam_user_role()})
    config = agent.config_dir / "config.toml"
    config.write_text(
        config.read_text().replace('credentials_file = "root-credentials.toml"', 'profile = "root"')
    )
    (agent.config_dir / "root-credentials.toml").unlink()
    agent.start()
    try:
        # (Only ids cross into the checks: a failure report shows its arguments.)
        check(agent, aws.admin_keys["AccessKeyId"], second["AccessKeyId"], here)
    finally:
        agent.stop()


def check(agent: AgentProcess, first_id: str, second_id: str, here: Path) -> None:
    assert agent.request("status")["root"]["source"] == "profile"

    seen = set()
    for _ in range(4):
        result = agent.request("renew", role="r")
        assert result["ok"], result
        seen.add(result["lease"]["id"])
    assert len(seen) == 4
    calls = (here / "calls").read_text().split()
    assert len(calls) >= 8  # a refresh for (nearly) every call: Expiration is 60 s away
    assert set(calls) == {first_id, second_id}

    (here / "fail").touch()
    failed = agent.request("renew", role="r")
    assert not failed["ok"]
    message = failed["error"]["message"]
    assert "could not be refreshed" in message and "SSO session has expired" in message
    assert "could not be refreshed" in agent.request("status")["root"]["error"]
    assert "could not be refreshed" in agent.cli("status").stdout
    # The lease it had is still served; and the provider's recovery is picked up.
    assert agent.request("credentials", role="r")["ok"]
    (here / "fail").unlink()
    assert agent.request("renew", role="r")["ok"]
    assert agent.request("status")["root"]["error"] is None
    assert "Traceback" not in agent.log()
    log = agent.log()
    assert not any(
        k["SecretAccessKey"] in log for k in json.loads((here / "keys.json").read_text())
    )
