"""Root key rotation that survives a SIGKILL at every step, and rotation on a
schedule (``rotate_every``), against moto with IAM enforcement.

Each step is cut by the fault proxy killing the agent around one AWS call; after
a restart the agent finishes the journaled rotation: one working root key (the
one its store holds), no extra key, no journal record left."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from dyncreds.aws.rootkeys import read_credentials_file
from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, iam_user_role, wait_for
from tests.e2e.conftest import Rig
from tests.faultproxy import Fault

pytestmark = pytest.mark.e2e


def stored_key(agent: AgentProcess) -> str:
    return read_credentials_file(agent.config_dir / "root-credentials.toml").access_key_id


def root_keys(aws: StandIn, agent: AgentProcess) -> list[str]:
    """vaultuser's keys, asked with the key the agent stores (the bootstrap key
    may be the one a rotation deleted)."""
    keys = read_credentials_file(agent.config_dir / "root-credentials.toml")
    iam = aws.client(
        "iam",
        aws_access_key_id=keys.access_key_id,
        aws_secret_access_key=keys.secret_access_key.reveal(),
    )
    listed = iam.list_access_keys(UserName="vaultuser")["AccessKeyMetadata"]
    return sorted(k["AccessKeyId"] for k in listed)


def works(agent: AgentProcess, aws: StandIn) -> None:
    """One root key, the stored one, and it issues."""
    wait_for(
        lambda: root_keys(aws, agent) == [stored_key(agent)],
        timeout=30,
        message=f"one root key, the stored one (log: {agent.log_path})",
    )
    assert agent.request("credentials", role="r")["ok"]


STEPS = {
    # CreateAccessKey done in AWS, the agent never heard: the new key is lost.
    "created": Fault(frozenset({"CreateAccessKey"}), kill="after"),
    # Proving the new key (signed by it): not saved yet, the old key stays.
    "proving": Fault(frozenset({"GetCallerIdentity"}), kill="before", times=1),
    # Saved and switched; the old key not deleted yet.
    "switched": Fault(frozenset({"DeleteAccessKey"}), kill="before"),
    # The old key deleted; the journal not told.
    "deleted": Fault(frozenset({"DeleteAccessKey"}), kill="after"),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_sigkill_at_each_rotation_step_leaves_one_working_root(
    step: str, aws: StandIn, rig: Callable[..., Rig]
) -> None:
    made = rig({"r": iam_user_role()})
    agent = made.start()
    old = stored_key(agent)
    fault = STEPS[step]
    if step == "proving":  # the new key's check, not the agent's own identity calls
        fault.only_key = lambda key: key != old
    made.proxy.add(fault)
    agent.cli("rotate-root", check=False, timeout=60)
    wait_for(made.dead, message=f"the agent killed at step {step!r}")
    made.proxy.clear()
    agent.start()
    works(agent, aws)
    wait_for(
        lambda: not [r for r in made.journal_rows() if r[0].startswith("root-rotation/")],
        message="the rotation record forgotten",
    )
    if step in ("switched", "deleted"):
        assert stored_key(agent) != old  # the rotation had switched: it stands
    else:
        assert stored_key(agent) == old  # it had not: the old key stays
    assert "root.rotate" in agent.log()


def test_rotate_every_rotates_on_schedule_and_status_shows_the_next(
    aws: StandIn, rig: Callable[..., Rig]
) -> None:
    made = rig({"r": iam_user_role()}, tables='rotate_every = "12s"\n')
    agent = made.start()
    first = stored_key(agent)
    status = agent.request("status")["root"]
    assert status["rotate_every"] == 12
    wait_for(lambda: agent.request("status")["root"]["next_rotation"], message="next_rotation")
    second = wait_for(
        lambda: (key := stored_key(agent)) != first and key, timeout=40, message="a rotation"
    )
    started = time.monotonic()
    works(agent, aws)
    third = wait_for(
        lambda: (key := stored_key(agent)) not in (first, second) and key,
        timeout=40,
        message="a second rotation",
    )
    # The second came one period after the first key's replacement, not at once.
    assert time.monotonic() - started > 5
    wait_for(lambda: root_keys(aws, agent) == [third], message="only the third key")
    assert agent.request("credentials", role="r")["ok"]

    # Scheduled rotations are audited too (no peer: nobody asked).
    def scheduled_rotations() -> list[dict[str, Any]]:
        audit = (agent.state_dir / "audit.jsonl").read_text().splitlines()
        return [json.loads(x) for x in audit if '"rotate_root"' in x]

    scheduled = wait_for(
        lambda: len(scheduled_rotations()) >= 2 and scheduled_rotations(),
        message="two scheduled rotations audited",
    )
    assert [(e["outcome"], e["trigger"], e["peer"]) for e in scheduled][:2] == [
        ("ok", "schedule", None)
    ] * 2
    assert {second, third} <= {e["access_key_id"] for e in scheduled}


def test_rotate_every_is_refused_for_a_store_the_agent_cannot_write(
    rig: Callable[..., Rig],
) -> None:
    made = rig({"r": iam_user_role()})
    path = made.agent.config_dir / "config.toml"
    text = path.read_text().replace(
        'credentials_file = "root-credentials.toml"', 'systemd_credential = "root"'
    )
    path.write_text(text + 'rotate_every = "30d"\n')
    result = made.agent.cli("check", check=False)
    assert result.returncode != 0
    assert "rotate_every" in result.stderr and "credentials_file or root.keyring" in result.stderr
