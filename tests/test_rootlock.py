"""The MFA lock's rules and words, and the session deny that spares the agent's
own MFA session."""

from __future__ import annotations

import json

from dyncreds.aws.session_revocation import deny_issued_before
from dyncreds.rootlock import MARGIN, RootLock

SERIAL = "arn:aws:iam::123456789012:mfa/admin"


def test_without_mfa_nothing_is_ever_locked() -> None:
    lock = RootLock()
    assert not lock.locked(0) and not lock.view(0)["locked"]


def test_locked_until_unlocked_and_again_just_before_the_session_ends() -> None:
    lock = RootLock(SERIAL)
    assert lock.locked(100) and "dyncreds unlock" in lock.why(100)
    lock.unlocked(1000)
    assert not lock.locked(1000 - MARGIN - 1)
    assert lock.view(500)["unlocked_until"] is not None
    assert lock.locked(1000 - MARGIN)  # a call could expire in flight
    assert "ended at" in lock.why(1000) and lock.view(1000)["unlocked_until"] is None


def test_lock_refuses_until_the_next_unlock() -> None:
    lock = RootLock(SERIAL)
    lock.unlocked(1000)
    lock.lock()
    assert lock.locked(10) and lock.refusing and "dyncreds lock" in lock.why(10)
    lock.unlocked(2000)
    assert not lock.locked(10) and not lock.refusing


def test_the_user_deny_spares_mfa_sessions_only_when_asked() -> None:
    plain = json.loads(deny_issued_before(1_800_000_000))["Statement"][0]["Condition"]
    assert plain == {"DateLessThan": {"aws:TokenIssueTime": "2027-01-15T08:00:00Z"}}
    spared = json.loads(deny_issued_before(1_800_000_000, spare_mfa=True))["Statement"][0]
    assert spared["Condition"]["BoolIfExists"] == {"aws:MultiFactorAuthPresent": "false"}
    assert spared["Effect"] == "Deny" and spared["Action"] == "*"
