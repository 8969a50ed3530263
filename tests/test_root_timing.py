"""The root on trio's mock clock: the MFA lock (what is served, refused and
retried while locked) and ``rotate_every`` (rotated when the key's age says so,
never earlier, retried with backoff, waiting for an unlock)."""

from __future__ import annotations

import trio
import trio.testing

from dyncreds.protocol import Locked
from tests import test_agent_timing
from tests.fakes import FakeBackend
from tests.test_agent_timing import IAM, STS, Harness

harness = test_agent_timing.harness  # the same fixture: an agent on the mock clock

DAY = 86400.0
FILE_ROOT = '\n[root]\ncredentials_file = "root.toml"\n'
MFA_ROOT = '\n[root]\nmfa_serial = "arn:aws:iam::123456789012:mfa/admin"\n'


async def test_scheduled_rotation_runs_when_the_key_is_old_enough_and_not_before(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({}, FILE_ROOT + 'rotate_every = "7d"\n', backend=backend)
    # The key was created 6 days ago: due in one day.
    backend.key_created_at = agent.now() - 6 * DAY
    agent.root.configure(agent.config.main.root)  # look again
    await trio.sleep(DAY - 120)
    assert backend.rotated_at == []
    assert agent.status()["root"]["next_rotation"] is not None
    await trio.sleep(240)
    assert len(backend.rotated_at) == 1
    # The next one is counted from the new key's creation: a week later, once.
    await trio.sleep(7 * DAY - 300)
    assert len(backend.rotated_at) == 1
    await trio.sleep(600)
    assert len(backend.rotated_at) == 2
    assert 7 * DAY <= backend.rotated_at[1] - backend.rotated_at[0] <= 7 * DAY + 3600
    assert agent.status()["counters"]["root_rotations"] == 2  # scheduled ones count too


async def test_a_failing_scheduled_rotation_is_retried_with_backoff_and_shown(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend(rotate_fails=3)
    backend.key_created_at = -30 * DAY  # long overdue
    agent = await harness({}, FILE_ROOT + 'rotate_every = "7d"\n', backend=backend)
    await trio.sleep(5)
    assert "Throttling" in str(agent.status()["root"]["rotation_error"])
    assert backend.rotated_at == []
    await trio.sleep(3 * 3600)
    assert len(backend.rotated_at) == 1  # after three failures, not a storm of them
    assert agent.status()["root"]["rotation_error"] is None


async def test_no_schedule_without_rotate_every(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    backend.key_created_at = -365 * DAY
    agent = await harness({}, FILE_ROOT, backend=backend)
    await trio.sleep(30 * DAY)
    assert backend.rotated_at == []
    assert agent.status()["root"]["next_rotation"] is None


async def test_locked_agent_refuses_issuance_serves_warm_leases_and_lock_refuses_all(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend(unlock_for=900)
    agent = await harness({"s": STS + 'ttl = "1h"\n'}, MFA_ROOT, backend=backend)
    assert agent.status()["root"]["locked"] is True
    assert agent.summary().startswith("locked")
    try:
        await agent.credentials("s")
        raise AssertionError("a locked agent issued credentials")
    except Locked as exc:
        assert "dyncreds unlock" in exc.message
    assert backend.issued == []
    until = await agent.root.unlock("123456")
    lease = await agent.credentials("s")
    assert agent.status()["root"]["locked"] is False
    # The MFA session ends (AWS's clock): the warm lease is still served ...
    await trio.sleep(until - agent.now())
    assert agent.status()["root"]["locked"] is True
    assert (await agent.credentials("s")).id == lease.id
    # ... until `lock`, which refuses even that.
    await agent.root.unlock("123456")
    agent.root.lock_now()
    try:
        await agent.credentials("s")
        raise AssertionError("a locked agent served credentials")
    except Locked as exc:
        assert "dyncreds lock" in exc.message
    assert agent.summary().startswith("locked by")


async def test_revocation_due_while_locked_waits_without_counting_attempts(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"u": IAM + 'ttl = "1h"\n'}, MFA_ROOT, backend=backend)
    await agent.root.unlock("123456")
    lease = await agent.credentials("u")
    agent.root.lock_now()
    await agent.journal.revoke_now(lease.id, agent.now())
    agent.reaper.poke()
    await trio.sleep(6 * 3600)  # far beyond IRREVOCABLE_AFTER attempts' worth of backoff
    record = agent.journal.get(lease.id)
    assert record is not None and record.attempts == 0
    assert "dyncreds unlock" in str(record.last_error)
    assert backend.deleted == []
    await agent.root.unlock("123456")  # pokes the reaper: no wait for its next look
    with trio.fail_after(5):
        while agent.journal.get(lease.id) is not None:  # noqa: ASYNC110 - the journal has no event
            await trio.sleep(0.1)
    assert backend.deleted == [lease.user_name]


async def test_scheduled_rotation_waits_for_the_unlock(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    backend.key_created_at = -30 * DAY
    agent = await harness({}, FILE_ROOT + 'rotate_every = "7d"\n' + MFA_ROOT[8:], backend=backend)
    await trio.sleep(DAY)
    assert backend.rotated_at == []
    await agent.root.unlock("123456")
    with trio.fail_after(60):
        while not backend.rotated_at:  # noqa: ASYNC110 - polling the fake on the mock clock
            await trio.sleep(1)
