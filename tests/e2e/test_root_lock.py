"""The MFA lock end to end: an agent with root.mfa_serial starts locked, a cold
shim request gets the one `locked` line, `unlock --code` gives it an MFA session,
and a recording proxy between the agent and moto shows which key signed every
call after that: the session's, except GetSessionToken and GetFederationToken,
which AWS takes only from the long-term key. `lock` then refuses warm roles too.

moto's IAM enforcement is off here: its GetSessionToken hands out keys that its
own enforcement does not know."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import SHIM, iam_user_role, wait_for
from tests.e2e.conftest import Rig

pytestmark = pytest.mark.e2e

SERIAL = "arn:aws:iam::123456789012:mfa/vaultuser"
LONG_TERM_ONLY = {"GetSessionToken", "GetFederationToken"}


def test_mfa_lock_unlock_and_the_key_that_signs_each_call(
    aws: StandIn, rig: Callable[..., Rig]
) -> None:
    aws.enforce_iam(unauthenticated_requests=1_000_000_000)  # off: see the docstring
    root_key = aws.admin_keys["AccessKeyId"]
    made = rig(
        {
            "u": iam_user_role(),
            "s": 'credential_type = "session_token"\nttl = "1h"\n',
            "f": 'credential_type = "federation_token"\npolicy_arns = '
            '["arn:aws:iam::aws:policy/ReadOnlyAccess"]\nttl = "1h"\n',
        },
        tables=f'mfa_serial = "{SERIAL}"\nunlock_for = "1h"\n',
    )
    agent = made.start()
    root = agent.request("status")["root"]
    assert root["locked"] is True and root["mfa"] is True and root["unlocked_until"] is None

    # Locked: a cold request through the shim fails with one line, and no AWS call.
    shim = subprocess.run([SHIM, "u"], env=agent.env, capture_output=True, text=True, timeout=30)
    assert shim.returncode != 0 and shim.stdout == ""
    assert shim.stderr.count("\n") == 1 and "(locked)" in shim.stderr
    assert "dyncreds unlock" in shim.stderr
    assert made.proxy.calls_of("CreateUser") == []

    # A code that is not six digits never reaches AWS.
    bad = agent.cli("unlock", "--code", "12", check=False)
    assert bad.returncode != 0 and "6 digits" in bad.stderr
    assert made.proxy.calls_of("GetSessionToken") == []

    before = len(made.proxy.calls)
    out = agent.cli("unlock", "--code", "123456").stdout
    assert out.startswith("unlocked until ")
    unlock = made.proxy.calls_of("GetSessionToken")
    assert len(unlock) == 1
    assert unlock[0].key_id == root_key
    assert unlock[0].params["SerialNumber"] == SERIAL
    assert unlock[0].params["TokenCode"] == "123456"
    assert unlock[0].params["DurationSeconds"] == "3600"

    issued = set()
    for role in ("u", "s", "f"):
        result = agent.request("credentials", role=role)
        assert result["ok"], result
        if role == "u":  # (moto's STS hands every session the same fixed key id)
            issued.add(result["credentials"]["AccessKeyId"])
    status = agent.request("status")["root"]
    assert status["locked"] is False and status["unlocked_until"]

    # (The new iam_user key's own propagation check is signed by that key.)
    after = [c for c in made.proxy.calls[before:] if c.key_id not in issued]
    session_keys = {c.key_id for c in after if c.action not in LONG_TERM_ONLY}
    assert {"CreateUser", "CreateAccessKey", "GetCallerIdentity"} <= {c.action for c in after}
    assert len(session_keys) == 1 and root_key not in session_keys, session_keys
    long_term = [c for c in after if c.action in LONG_TERM_ONLY]
    assert {c.action for c in long_term} == LONG_TERM_ONLY  # the unlock, s's and f's
    assert {c.key_id for c in long_term} == {root_key}

    # `lock`: the warm iam_user lease is refused too, and nothing is signed anymore.
    agent.cli("lock")
    refused = agent.request("credentials", role="u")
    assert refused["error"]["code"] == "locked"
    assert "dyncreds lock" in refused["error"]["message"]
    status = agent.request("status")["root"]
    assert status["locked"] is True and status["locked_by_user"] is True
    assert "locked" in agent.cli("status").stdout

    # Unlocked again, the warm lease is served from memory (no new user).
    users = len(made.proxy.calls_of("CreateUser"))
    agent.cli("unlock", "--code", "654321")
    assert agent.request("credentials", role="u")["ok"]
    assert len(made.proxy.calls_of("CreateUser")) == users

    # The audit log has the unlock and the lock, and never the code's session.
    lines = wait_for(
        lambda: (
            [
                json.loads(line)
                for line in (agent.state_dir / "audit.jsonl").read_text().splitlines()
                if '"unlock"' in line or '"lock"' in line
            ]
            or None
        ),
        message="unlock and lock in the audit log",
    )
    assert [(e["op"], e["outcome"]) for e in lines][:3] == [
        ("unlock", "bad_request"),
        ("unlock", "ok"),
        ("lock", "ok"),
    ]


def test_unlock_without_mfa_serial_says_what_to_set(rig: Callable[..., Rig]) -> None:
    agent = rig({"u": iam_user_role()}).start()
    result = agent.cli("unlock", "--code", "123456", check=False)
    assert result.returncode != 0 and "root.mfa_serial" in result.stderr
    result = agent.cli("lock", check=False)
    assert result.returncode != 0 and "root.mfa_serial" in result.stderr
    assert agent.request("status")["root"]["locked"] is False
