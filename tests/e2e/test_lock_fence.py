"""`lock` is a fence, and `unlock` claims only a session AWS accepts.

The fault proxy holds GetSessionToken (an unlock in flight) or AssumeRole (an
issuance in flight) while `lock` runs: once `lock` has returned, the socket hands
out nothing - neither the in-flight issuance's lease to its waiting client nor
anything after the in-flight unlock finishes - until an unlock that started
after the lock. With moto's IAM enforcement on, its GetSessionToken hands out keys
its own enforcement rejects: the unlock proves the session and says so."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import iam_user_role, make_assumable_role, wait_for
from tests.e2e.conftest import Rig
from tests.faultproxy import Fault

pytestmark = pytest.mark.e2e

SERIAL = "arn:aws:iam::123456789012:mfa/vaultuser"
MFA = f'mfa_serial = "{SERIAL}"\nunlock_for = "1h"\n'


def test_unlock_of_a_session_aws_rejects_names_the_code_and_stays_locked(
    rig: Callable[..., Rig],
) -> None:
    made = rig({"u": iam_user_role()}, tables=MFA)  # IAM enforcement on
    agent = made.start()
    result = agent.cli("unlock", "--code", "123456", check=False)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "InvalidClientTokenId" in result.stderr and "dyncreds unlock" in result.stderr
    assert not result.stdout.startswith("unlocked")
    assert agent.request("status")["root"]["locked"] is True
    assert "root.unlock_rejected" in agent.log()
    assert agent.request("credentials", role="u")["error"]["code"] == "locked"
    # Six digits means six ASCII digits: full-width ones never reach AWS.
    calls = len(made.proxy.calls_of("GetSessionToken"))
    wide = agent.request("unlock", code="\uff11\uff12\uff13\uff14\uff15\uff16")
    assert wide["error"]["code"] == "bad_request" and "6 digits" in wide["error"]["message"]
    assert len(made.proxy.calls_of("GetSessionToken")) == calls


def test_an_unlock_in_flight_when_lock_came_does_not_unlock(
    aws: StandIn, rig: Callable[..., Rig]
) -> None:
    aws.enforce_iam(unauthenticated_requests=1_000_000_000)  # see test_root_lock.py
    made = rig({"u": iam_user_role()}, tables=MFA)
    agent = made.start()
    made.proxy.add(Fault(frozenset({"GetSessionToken"}), hold=3.0, times=1))
    unlock = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "unlock", "--code", "123456"],
        env=agent.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: made.proxy.calls_of("GetSessionToken"), message="the unlock in flight")
    agent.cli("lock")
    out, err = unlock.communicate(timeout=60)
    assert unlock.returncode != 0 and "in flight" in err, (out, err)
    assert agent.request("status")["root"]["locked"] is True
    assert agent.request("credentials", role="u")["error"]["code"] == "locked"
    # An unlock that starts after the lock does unlock.
    assert agent.cli("unlock", "--code", "654321").stdout.startswith("unlocked until")
    assert agent.request("credentials", role="u")["ok"]


def test_a_client_waiting_on_an_issuance_in_flight_gets_locked(
    aws: StandIn, rig: Callable[..., Rig]
) -> None:
    aws.enforce_iam(unauthenticated_requests=1_000_000_000)
    arn = make_assumable_role(aws)
    made = rig({"deploy": f'credential_type = "assumed_role"\nrole_arns = ["{arn}"]\n'}, tables=MFA)
    agent = made.start()
    agent.cli("unlock", "--code", "123456")
    made.proxy.add(Fault(frozenset({"AssumeRole"}), hold=3.0, times=1))
    answers: list[dict[str, Any]] = []
    waiting = threading.Thread(
        target=lambda: answers.append(agent.request("credentials", role="deploy"))
    )
    waiting.start()
    wait_for(lambda: made.proxy.calls_of("AssumeRole"), message="the issuance in flight")
    agent.cli("lock")
    assert agent.request("credentials", role="deploy")["error"]["code"] == "locked"
    waiting.join(timeout=60)
    assert answers and answers[0]["error"]["code"] == "locked", answers
    # The issuance finished (the lease is the role's); it is served after an unlock.
    wait_for(
        lambda: agent.request("status")["roles"][0]["lease_id"], message="the issued lease kept"
    )
    agent.cli("unlock", "--code", "654321")
    assert agent.request("credentials", role="deploy")["ok"]
    assert len(made.proxy.calls_of("AssumeRole")) == 1
