"""The broker's table, every (phase, event) pair: what it does, or that it is
refused and changes nothing. Driven synchronously, no trio, no clocks."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from dyncreds import broker, leases
from dyncreds.broker import Action, Event, Phase, RoleState
from tests.test_leases import T, lease, role

A = Action
OLD = lease(issued=0)
NEW = lease(issued=10)

# The contract, written out: (phase, event) -> (next phase, actions, lease after)
# where the lease after is "old" (the one held before), "new" (the one the event
# brought) or None. Every pair not listed here must be refused.
EXPECTED: dict[tuple[Phase, Event], tuple[Phase, tuple[Action, ...], str | None]] = {
    (Phase.IDLE, Event.REQUEST_STALE): (Phase.ISSUING, (A.ISSUE, A.WAIT), None),
    (Phase.IDLE, Event.RENEW): (Phase.ISSUING, (A.ISSUE, A.WAIT), None),
    (Phase.IDLE, Event.PREFETCH): (Phase.ISSUING, (A.ISSUE,), None),
    (Phase.IDLE, Event.REVOKE): (Phase.IDLE, (), None),
    (Phase.ISSUING, Event.REQUEST_STALE): (Phase.ISSUING, (A.WAIT,), None),
    (Phase.ISSUING, Event.RENEW): (Phase.ISSUING, (A.WAIT,), None),
    (Phase.ISSUING, Event.ISSUED): (Phase.READY, (A.INSTALL, A.WAKE, A.SCHEDULE), "new"),
    (Phase.ISSUING, Event.EXTENDED): (Phase.IDLE, (A.WAKE, A.SCHEDULE), None),
    (Phase.ISSUING, Event.FAILED): (Phase.IDLE, (A.FAIL_WAITERS, A.BACKOFF), None),
    (Phase.ISSUING, Event.REVOKE): (Phase.ISSUING, (A.RETIRE_NOW,), None),
    (Phase.READY, Event.REQUEST_SERVABLE): (Phase.READY, (A.SERVE,), "old"),
    (Phase.READY, Event.REQUEST_STALE): (Phase.ISSUING, (A.ISSUE, A.WAIT), "old"),
    (Phase.READY, Event.RENEW): (Phase.REFRESHING, (A.ISSUE, A.WAIT), "old"),
    (Phase.READY, Event.DUE_EXTEND): (Phase.REFRESHING, (A.EXTEND,), "old"),
    (Phase.READY, Event.DUE_REPLACE): (Phase.REFRESHING, (A.ISSUE,), "old"),
    (Phase.READY, Event.EXPIRED): (Phase.IDLE, (A.RETIRE_NOW, A.SCHEDULE), None),
    (Phase.READY, Event.REVOKE): (Phase.IDLE, (A.RETIRE_NOW, A.SCHEDULE), None),
    (Phase.REFRESHING, Event.REQUEST_SERVABLE): (Phase.REFRESHING, (A.SERVE,), "old"),
    (Phase.REFRESHING, Event.REQUEST_STALE): (Phase.REFRESHING, (A.WAIT,), "old"),
    (Phase.REFRESHING, Event.RENEW): (Phase.REFRESHING, (A.WAIT,), "old"),
    (Phase.REFRESHING, Event.ISSUED): (Phase.READY, (A.INSTALL, A.WAKE, A.SCHEDULE), "new"),
    (Phase.REFRESHING, Event.EXTENDED): (Phase.READY, (A.INSTALL, A.WAKE, A.SCHEDULE), "new"),
    (Phase.REFRESHING, Event.FAILED): (Phase.READY, (A.WAKE, A.BACKOFF), "old"),
    (Phase.REFRESHING, Event.REVOKE): (Phase.ISSUING, (A.RETIRE_NOW,), None),
}

ALL_PAIRS = list(itertools.product(Phase, Event))


def state_in(phase: Phase) -> RoleState:
    """A role in ``phase``, holding a lease where the phase implies one."""
    held = OLD if phase in (Phase.READY, Phase.REFRESHING) else None
    return RoleState(role=role(), phase=phase, lease=held, jitter=0.25)


@pytest.mark.parametrize(("phase", "event"), ALL_PAIRS, ids=lambda x: str(x))
def test_every_pair(phase: Phase, event: Event) -> None:
    state = state_in(phase)
    before = dataclasses.replace(state, counters=dict(state.counters))
    expected = EXPECTED.get((phase, event))
    if expected is None:
        with pytest.raises(broker.InvalidTransition):
            broker.step(state, event, 5, new_lease=NEW, error="boom", draw=0.0)
        assert state == before, "a refused event changed the state"
        return
    next_phase, actions, after = expected
    assert broker.step(state, event, 5, new_lease=NEW, error="boom", draw=0.0) == actions
    assert state.phase == next_phase
    assert state.lease is {"old": OLD, "new": NEW, None: None}[after]
    # Invariants every transition keeps: a resting role holds a lease exactly when READY.
    if state.phase in (Phase.IDLE, Phase.READY):
        assert (state.lease is not None) == (state.phase == Phase.READY)
    if event in broker.REQUESTS:
        assert state.last_used == 5 and state.counters["requests"] == 1
    if event == Event.FAILED:
        assert state.failures == 1 and state.last_error == "boom"
        assert state.backoff_until is not None and state.backoff_until > 5
    if A.INSTALL in actions:
        assert state.failures == 0 and state.last_error is None and state.jitter == 0.0


def test_the_table_is_the_contract() -> None:
    assert {pair: (p, a) for pair, (p, a, _) in EXPECTED.items()} == {
        pair: (
            Phase.IDLE if p == Phase.READY and EXPECTED.get(pair, (p, a, "old"))[2] is None else p,
            a,
        )
        for pair, (p, a) in broker.TRANSITIONS.items()
    }
    assert len(ALL_PAIRS) == len(Phase) * len(Event)


def test_install_needs_the_new_lease() -> None:
    state = state_in(Phase.ISSUING)
    with pytest.raises(broker.InvalidTransition):
        broker.step(state, Event.ISSUED, 1)
    assert state.phase == Phase.ISSUING


def test_cold_request_issues_and_burst_waits() -> None:
    state = RoleState(role=role())
    assert broker.step(state, Event.REQUEST_STALE, 0) == (Action.ISSUE, Action.WAIT)
    assert state.phase == Phase.ISSUING
    assert broker.step(state, Event.REQUEST_STALE, 0) == (Action.WAIT,)
    actions = broker.step(state, Event.ISSUED, 1, new_lease=lease(issued=1))
    assert Action.INSTALL in actions and Action.WAKE in actions
    assert state.phase.value == "ready"
    assert broker.classify_request(state, 2, T) == Event.REQUEST_SERVABLE


def test_failure_backs_off_then_clears() -> None:
    state = RoleState(role=role())
    broker.step(state, Event.REQUEST_STALE, 0)
    actions = broker.step(state, Event.FAILED, 1, error="Throttling", draw=0)
    assert Action.FAIL_WAITERS in actions
    assert state.phase == Phase.IDLE and state.failures == 1 and state.last_error == "Throttling"
    assert state.backoff_until == 2.0
    broker.step(state, Event.REQUEST_STALE, 3)
    broker.step(state, Event.ISSUED, 4, new_lease=lease(issued=4))
    assert state.failures == 0 and state.backoff_until is None


def test_timer_events() -> None:
    state = RoleState(role=role())
    broker.step(state, Event.REQUEST_STALE, 0)
    broker.step(state, Event.ISSUED, 0, new_lease=lease(), draw=0.0)
    refresh = leases.refresh_at(lease(), T, 3600, 0.0)
    assert broker.classify_timer(state, refresh - 1, T) is None
    assert broker.plan_wake(state, refresh - 1, T) == refresh
    assert broker.classify_timer(state, refresh, T) == Event.DUE_EXTEND
    state.last_used = -10000  # idle: no refresh, only expiry
    assert broker.classify_timer(state, refresh, T) is None
    assert broker.plan_wake(state, refresh, T) == 3600
    assert broker.classify_timer(state, 3600, T) == Event.EXPIRED
    assert Action.RETIRE_NOW in broker.step(state, Event.EXPIRED, 3600)
    assert state.phase == Phase.IDLE and state.lease is None


def test_sts_leases_are_replaced_not_extended() -> None:
    state = RoleState(role=role(kind="session_token", ttl=3600, max_ttl=3600))
    sts = lease(kind="session_token")
    broker.step(state, Event.REQUEST_STALE, 0)
    broker.step(state, Event.ISSUED, 0, new_lease=sts, draw=0.0)
    refresh = leases.refresh_at(sts, T, 3600, 0.0)
    assert broker.classify_timer(state, refresh, T) == Event.DUE_REPLACE
    assert broker.describe_next(state, 1, T).startswith("replace at")


def test_prefetch_issues_without_requests() -> None:
    state = RoleState(role=role(prefetch=True))
    assert broker.classify_timer(state, 0, T) == Event.PREFETCH


def test_describe_next_uses_the_kind() -> None:
    state = RoleState(role=role())
    broker.step(state, Event.REQUEST_STALE, 0)
    broker.step(state, Event.ISSUED, 0, new_lease=lease(), draw=0.0)
    assert broker.describe_next(state, 1, T).startswith("extend at")
    state.last_used = -10000
    assert broker.describe_next(state, 1, T).startswith("idle; revoke at")
