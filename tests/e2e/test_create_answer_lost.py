"""The abandoned-call rule for every create: a CreateAccessKey whose answer is
lost (aws_call_timeout 3s, the call held 6s by the fault proxy) is not resent -
botocore would have made a second key nobody tracks - and the key it made when it
landed is deleted (static_user: reconciled before the user's next key, and by the
reaper after create_grace; iam_user: with its user). In the end the user holds
only keys the journal knows, also after `revoke`. (The root's new key: in
test_root_store_faults.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import iam_user_role, temp_users, wait_for
from tests.e2e.conftest import Rig
from tests.e2e.test_static_user import ROLE, keys_of, make_user
from tests.faultproxy import Fault

pytestmark = pytest.mark.e2e

SLOW = 'aws_call_timeout = "3s"\ncreate_grace = "10s"\n'


def journaled_keys(made: Rig) -> set[str]:
    db = sqlite3.connect(made.agent.state_dir / "journal.sqlite3")
    try:
        return {k for (k,) in db.execute("SELECT access_key_id FROM leases") if k}
    finally:
        db.close()


@pytest.mark.parametrize("kind", ["static_user", "iam_user"])
def test_a_create_whose_answer_is_lost_leaves_no_untracked_key(
    kind: str, aws: StandIn, rig: Callable[..., Rig]
) -> None:
    if kind == "static_user":
        make_user(aws)
    made = rig({"r": ROLE if kind == "static_user" else iam_user_role()}, agent=SLOW)
    agent = made.start()
    made.proxy.add(Fault(frozenset({"CreateAccessKey"}), hold=6.0, times=1))
    first = agent.request("credentials", role="r")
    assert not first["ok"] and first["error"]["code"] == "upstream", first
    assert len(made.proxy.calls_of("CreateAccessKey")) == 1  # not resent
    served = agent.request("credentials", role="r")
    assert served["ok"], served
    key = served["credentials"]["AccessKeyId"]
    # The held create lands (a key nobody knows), then is deleted.
    wait_for(lambda: made.proxy.calls_of("CreateAccessKey")[0].status, message="it landed")
    if kind == "static_user":
        wait_for(lambda: keys_of(aws) == [key], timeout=40, message="only the served key")
        assert journaled_keys(made) == {key}
    else:
        wait_for(lambda: len(temp_users(aws)) == 1, timeout=40, message="only the served user")
    agent.cli("revoke", "--role", "r")
    if kind == "static_user":  # (a static role gets its next key at once)
        wait_for(
            lambda: key not in keys_of(aws) and set(keys_of(aws)) == journaled_keys(made),
            timeout=40,
            message="only journaled keys left",
        )
    else:
        wait_for(lambda: temp_users(aws) == [], timeout=40, message="no user left")
