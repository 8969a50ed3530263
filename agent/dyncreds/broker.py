"""Per-role state machine. Pure and table-driven, in the manner of h11's _state.py.

The rules, in words:

* A role is IDLE (no lease), ISSUING (a first or stale-replacing lease is being
  made and requests wait for it), READY (a current lease), or REFRESHING (a
  current lease is served while its extension or replacement is in flight).
* A request is served from a servable lease at once. Otherwise it joins the one
  issuance in flight, or starts it: one issuance per role however many clients
  ask at once.
* The refresher wakes at ``refresh_at``; an active role's iam_user lease is
  extended while max_ttl allows, anything else is replaced. An idle role is left
  alone until its lease expires, then the lease is retired.
* A replaced lease is retired at the expiry it announced (an iam_user is revoked
  then; STS credentials just lapse): clients that got it keep their promise.
* A failed issuance fails the requests waiting for it and backs off; a failed
  refresh keeps serving the current lease and retries with backoff.

``step(state, event, now)`` applies the table and returns the actions for the
I/O shell (agent.py) to perform; it never performs any itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from dyncreds import leases
from dyncreds.config import Role
from dyncreds.leases import Lease, Timing
from dyncreds.protocol import rfc3339


class Phase(StrEnum):
    IDLE = "idle"
    ISSUING = "issuing"
    READY = "ready"
    REFRESHING = "refreshing"


class Event(StrEnum):
    REQUEST_SERVABLE = "request_servable"  # a request, and the lease may be served
    REQUEST_STALE = "request_stale"  # a request, and there is no servable lease
    DUE_EXTEND = "due_extend"  # refresh time: move the iam_user expiry forward
    DUE_REPLACE = "due_replace"  # refresh time: issue a new lease
    EXPIRED = "expired"  # the lease reached its expiry and nobody refreshed it
    PREFETCH = "prefetch"  # a prefetch role has no lease: make one
    ISSUED = "issued"  # a new lease is ready
    EXTENDED = "extended"  # the current lease's expiry moved
    FAILED = "failed"  # issuing or extending failed
    REVOKE = "revoke"  # revoke the current lease now (CLI, reload)


class Action(StrEnum):
    SERVE = "serve"  # hand the current lease to the requester
    WAIT = "wait"  # requester waits for the issuance in flight
    ISSUE = "issue"  # start an issuance
    EXTEND = "extend"  # start an extension of the current lease
    INSTALL = "install"  # make the new lease current; retire the old at its announced expiry
    RETIRE_NOW = "retire_now"  # retire the current lease now
    WAKE = "wake"  # wake waiters: they re-run their request
    FAIL_WAITERS = "fail_waiters"  # waiters get the issuance's error
    SCHEDULE = "schedule"  # compute the next refresh time
    BACKOFF = "backoff"  # schedule a retry after a failure


# (phase, event) -> (next phase, actions). "Rest" phases are written as READY and
# become IDLE when no lease is held (see _rest).
TRANSITIONS: dict[tuple[Phase, Event], tuple[Phase, tuple[Action, ...]]] = {
    (Phase.IDLE, Event.REQUEST_STALE): (Phase.ISSUING, (Action.ISSUE, Action.WAIT)),
    (Phase.ISSUING, Event.REQUEST_STALE): (Phase.ISSUING, (Action.WAIT,)),
    (Phase.READY, Event.REQUEST_SERVABLE): (Phase.READY, (Action.SERVE,)),
    (Phase.READY, Event.REQUEST_STALE): (Phase.ISSUING, (Action.ISSUE, Action.WAIT)),
    (Phase.REFRESHING, Event.REQUEST_SERVABLE): (Phase.REFRESHING, (Action.SERVE,)),
    (Phase.REFRESHING, Event.REQUEST_STALE): (Phase.REFRESHING, (Action.WAIT,)),
    (Phase.READY, Event.DUE_EXTEND): (Phase.REFRESHING, (Action.EXTEND,)),
    (Phase.READY, Event.DUE_REPLACE): (Phase.REFRESHING, (Action.ISSUE,)),
    (Phase.IDLE, Event.PREFETCH): (Phase.ISSUING, (Action.ISSUE,)),
    (Phase.READY, Event.EXPIRED): (Phase.IDLE, (Action.RETIRE_NOW, Action.SCHEDULE)),
    (Phase.ISSUING, Event.ISSUED): (Phase.READY, (Action.INSTALL, Action.WAKE, Action.SCHEDULE)),
    (Phase.REFRESHING, Event.ISSUED): (Phase.READY, (Action.INSTALL, Action.WAKE, Action.SCHEDULE)),
    (Phase.REFRESHING, Event.EXTENDED): (
        Phase.READY,
        (Action.INSTALL, Action.WAKE, Action.SCHEDULE),
    ),
    (Phase.ISSUING, Event.FAILED): (Phase.READY, (Action.FAIL_WAITERS, Action.BACKOFF)),
    (Phase.REFRESHING, Event.FAILED): (Phase.READY, (Action.WAKE, Action.BACKOFF)),
    (Phase.READY, Event.REVOKE): (Phase.IDLE, (Action.RETIRE_NOW, Action.SCHEDULE)),
    (Phase.REFRESHING, Event.REVOKE): (Phase.ISSUING, (Action.RETIRE_NOW,)),
    # An issuance started before a revoke still completes: it is a fresh lease.
    (Phase.ISSUING, Event.REVOKE): (Phase.ISSUING, (Action.RETIRE_NOW,)),
    # The extension of a lease revoked meanwhile: nothing to install.
    (Phase.ISSUING, Event.EXTENDED): (Phase.READY, (Action.WAKE, Action.SCHEDULE)),
}


@dataclass
class RoleState:
    """Everything the broker knows about one role. Mutated only by ``step``."""

    role: Role
    phase: Phase = Phase.IDLE
    lease: Lease | None = None
    last_used: float | None = None
    last_error: str | None = None
    failures: int = 0
    backoff_until: float | None = None  # no refresh attempt before this, after a failure
    jitter: float = 0.5  # drawn once per lease by the shell
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def ttl(self) -> float:
        return float(self.role.ttl)

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


class InvalidTransition(Exception):
    pass


def classify_request(state: RoleState, now: float, timing: Timing) -> Event:
    if leases.servable(state.lease, now, timing, state.ttl):
        return Event.REQUEST_SERVABLE
    return Event.REQUEST_STALE


def classify_timer(state: RoleState, now: float, timing: Timing) -> Event | None:
    """What the refresher should do now, if anything."""
    lease = state.lease
    backing_off = state.backoff_until is not None and now < state.backoff_until
    if state.phase == Phase.IDLE and state.role.prefetch and not backing_off:
        return Event.PREFETCH
    if lease is None or state.phase != Phase.READY:
        return None
    if lease.remaining(now) <= 0:
        return Event.EXPIRED
    if backing_off:
        return None
    if not leases.is_active(state.last_used, state.role.prefetch, now, timing):
        return None
    if now < leases.refresh_at(lease, timing, state.ttl, state.jitter) and state.failures == 0:
        return None
    if leases.refresh_kind(lease, now, timing, state.ttl) == "extend":
        return Event.DUE_EXTEND
    return Event.DUE_REPLACE


def step(
    state: RoleState,
    event: Event,
    now: float,
    timing: Timing,
    *,
    new_lease: Lease | None = None,
    error: str | None = None,
    backoff_jitter: float = 0.5,
) -> tuple[Action, ...]:
    """Apply one event; return the actions the shell must perform, in order."""
    try:
        phase, actions = TRANSITIONS[(state.phase, event)]
    except KeyError:
        raise InvalidTransition(f"{state.role.name}: {event} in phase {state.phase}") from None
    if event in (Event.REQUEST_SERVABLE, Event.REQUEST_STALE):
        state.last_used = now
        state.count("requests")
    if Action.INSTALL in actions:
        assert new_lease is not None, "INSTALL needs the new lease"
        state.lease = new_lease
        state.failures = 0
        state.last_error = None
        state.count("extended" if event == Event.EXTENDED else "issued")
    if Action.RETIRE_NOW in actions:
        state.lease = None
    if event == Event.FAILED:
        state.failures += 1
        state.last_error = error
        state.count("failures")
    if Action.BACKOFF in actions:
        state.backoff_until = now + leases.backoff(state.failures, backoff_jitter)
    if Action.SCHEDULE in actions:
        state.backoff_until = None
    if phase == Phase.READY and state.lease is None:
        phase = Phase.IDLE
    state.phase = phase
    return actions


def plan_wake(state: RoleState, now: float, timing: Timing) -> float | None:
    """The next time the refresher must look at this role (None: only when poked).

    Called after ``classify_timer`` found nothing to do, so every answer is in
    the future (or None): the refresher never spins.
    """
    lease = state.lease
    if state.phase in (Phase.ISSUING, Phase.REFRESHING):
        return None  # the task in flight pokes the refresher when it ends
    if lease is None:
        return state.backoff_until if state.role.prefetch else None
    wake = lease.expires_at
    if state.backoff_until is not None and now < state.backoff_until:
        return min(wake, state.backoff_until)
    if leases.is_active(state.last_used, state.role.prefetch, now, timing):
        wake = min(wake, leases.refresh_at(lease, timing, state.ttl, state.jitter))
    return wake


def describe_next(state: RoleState, now: float, timing: Timing) -> str:
    """For ``status``: what the refresher will do next, in words."""
    lease = state.lease
    if state.phase == Phase.ISSUING:
        return "issuing"
    if state.phase == Phase.REFRESHING:
        return "refreshing"
    if lease is None:
        return "issue on first request" if not state.role.prefetch else "issue (prefetch)"
    if state.failures and state.backoff_until:
        return f"retry at {_clock(state.backoff_until)}"
    if leases.is_active(state.last_used, state.role.prefetch, now, timing):
        kind = leases.refresh_kind(lease, now, timing, state.ttl)
        at = leases.refresh_at(lease, timing, state.ttl, state.jitter)
        return f"{'renew' if kind == 'extend' else 'replace'} at {_clock(at)}"
    verb = "revoke" if lease.credential_type == "iam_user" else "expire"
    return f"idle; {verb} at {_clock(lease.expires_at)}"


def _clock(epoch: float) -> str:
    return rfc3339(epoch)
