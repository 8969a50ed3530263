"""Per-role state machine. Pure and table-driven, in the manner of h11's _state.py.

The rules, in words:

* A role is IDLE (no lease), ISSUING (a first or stale-replacing lease is being
  made and requests wait for it), READY (a current lease), or REFRESHING (a
  current lease is served while its extension or replacement is in flight).
* A request is served from a servable lease at once. Otherwise it joins the one
  issuance in flight, or starts it: one issuance per role however many clients
  ask at once.
* The refresher wakes at ``refresh_at``; an active role's extendable lease is
  *extended* (same keys, later expiry) while max_ttl allows, anything else is
  *replaced* (new keys). An idle role is left alone until its lease expires, then
  the lease is retired.
* ``renew`` (the CLI's "new keys now") is a replacement that waits for whatever
  is in flight first.
* A replaced lease is retired at the expiry it announced (an iam_user is revoked
  then; STS credentials just lapse): clients that got it keep their promise.
  ``revoke`` retires the current lease now.
* A failed issuance fails the requests waiting for it and backs off; a failed
  refresh keeps serving the current lease and retries with backoff.

``step(state, event, now, ...)`` is the only function that changes a
``RoleState``. It applies the table and returns the actions, in order, for the
shell (worker.py) to carry out; it performs none itself. A (phase, event) pair
missing from the table raises ``InvalidTransition`` and changes nothing.
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
    RENEW = "renew"  # replace the lease now (after whatever is in flight)
    DUE_EXTEND = "due_extend"  # refresh time: move the expiry forward
    DUE_REPLACE = "due_replace"  # refresh time: issue a new lease
    EXPIRED = "expired"  # the lease reached its expiry and nobody refreshed it
    PREFETCH = "prefetch"  # a prefetch role has no lease: make one
    ISSUED = "issued"  # a new lease is ready
    EXTENDED = "extended"  # the current lease's expiry moved
    FAILED = "failed"  # issuing or extending failed
    REVOKE = "revoke"  # retire the current lease now (CLI, reload)


class Action(StrEnum):
    SERVE = "serve"  # the requester gets the current lease
    WAIT = "wait"  # the requester waits for the work in flight, then asks again
    ISSUE = "issue"  # start an issuance
    EXTEND = "extend"  # start an extension of the current lease
    INSTALL = "install"  # the new lease is current; the old one retires at its expiry
    RETIRE_NOW = "retire_now"  # the previous lease is retired now
    WAKE = "wake"  # the work in flight is over: waiters ask again
    FAIL_WAITERS = "fail_waiters"  # waiters get the issuance's error
    SCHEDULE = "schedule"  # the refresher plans its next wake-up
    BACKOFF = "backoff"  # the refresher retries after ``backoff_until``


R = Phase.READY  # "rest": becomes IDLE when no lease is held (see step)
_serve, _wait = (Action.SERVE,), (Action.WAIT,)
_start_and_wait = (Action.ISSUE, Action.WAIT)
_installed = (Action.INSTALL, Action.WAKE, Action.SCHEDULE)

# (phase, event) -> (next phase, actions).
TRANSITIONS: dict[tuple[Phase, Event], tuple[Phase, tuple[Action, ...]]] = {
    # requests
    (Phase.IDLE, Event.REQUEST_STALE): (Phase.ISSUING, _start_and_wait),
    (Phase.ISSUING, Event.REQUEST_STALE): (Phase.ISSUING, _wait),
    (Phase.READY, Event.REQUEST_SERVABLE): (R, _serve),
    (Phase.READY, Event.REQUEST_STALE): (Phase.ISSUING, _start_and_wait),
    (Phase.REFRESHING, Event.REQUEST_SERVABLE): (Phase.REFRESHING, _serve),
    (Phase.REFRESHING, Event.REQUEST_STALE): (Phase.REFRESHING, _wait),
    # renew: one replacement, after whatever is in flight
    (Phase.IDLE, Event.RENEW): (Phase.ISSUING, _start_and_wait),
    (Phase.READY, Event.RENEW): (Phase.REFRESHING, _start_and_wait),
    (Phase.ISSUING, Event.RENEW): (Phase.ISSUING, _wait),
    (Phase.REFRESHING, Event.RENEW): (Phase.REFRESHING, _wait),
    # the refresher
    (Phase.READY, Event.DUE_EXTEND): (Phase.REFRESHING, (Action.EXTEND,)),
    (Phase.READY, Event.DUE_REPLACE): (Phase.REFRESHING, (Action.ISSUE,)),
    (Phase.IDLE, Event.PREFETCH): (Phase.ISSUING, (Action.ISSUE,)),
    (Phase.READY, Event.EXPIRED): (R, (Action.RETIRE_NOW, Action.SCHEDULE)),
    # work in flight ends
    (Phase.ISSUING, Event.ISSUED): (R, _installed),
    (Phase.REFRESHING, Event.ISSUED): (R, _installed),
    (Phase.REFRESHING, Event.EXTENDED): (R, _installed),
    # The extension of a lease revoked meanwhile: nothing to install.
    (Phase.ISSUING, Event.EXTENDED): (R, (Action.WAKE, Action.SCHEDULE)),
    (Phase.ISSUING, Event.FAILED): (R, (Action.FAIL_WAITERS, Action.BACKOFF)),
    (Phase.REFRESHING, Event.FAILED): (R, (Action.WAKE, Action.BACKOFF)),
    # revoke
    (Phase.IDLE, Event.REVOKE): (Phase.IDLE, ()),
    (Phase.READY, Event.REVOKE): (R, (Action.RETIRE_NOW, Action.SCHEDULE)),
    # What is in flight completes: an issuance started before a revoke is a fresh lease.
    (Phase.REFRESHING, Event.REVOKE): (Phase.ISSUING, (Action.RETIRE_NOW,)),
    (Phase.ISSUING, Event.REVOKE): (Phase.ISSUING, (Action.RETIRE_NOW,)),
}

REQUESTS = frozenset({Event.REQUEST_SERVABLE, Event.REQUEST_STALE, Event.RENEW})


@dataclass
class RoleState:
    """Everything the broker knows about one role. Changed only by ``step``."""

    role: Role
    phase: Phase = Phase.IDLE
    lease: Lease | None = None
    last_used: float | None = None
    last_error: str | None = None
    failures: int = 0
    backoff_until: float | None = None  # no refresh attempt before this, after a failure
    jitter: float = 0.5  # drawn once per lease, so roles issued together refresh apart
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
    if state.phase == Phase.IDLE and state.role.warm and not backing_off:
        return Event.PREFETCH
    if lease is None or state.phase != Phase.READY:
        return None
    if lease.remaining(now) <= 0:
        return Event.EXPIRED
    if backing_off:
        return None
    if not leases.is_active(state.last_used, state.role.warm, now, timing):
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
    *,
    new_lease: Lease | None = None,
    error: str | None = None,
    draw: float = 0.5,
) -> tuple[Action, ...]:
    """Apply one event; return the actions the shell must perform, in order.

    ``new_lease`` comes with ISSUED and EXTENDED, ``error`` with FAILED; ``draw``
    is a random number in [0, 1) from the shell, for jitter and backoff.
    """
    try:
        phase, actions = TRANSITIONS[(state.phase, event)]
    except KeyError:
        raise InvalidTransition(f"{state.role.name}: {event} in phase {state.phase}") from None
    if event in REQUESTS:
        state.last_used = now
        state.count("requests")
    if Action.INSTALL in actions:
        if new_lease is None:
            raise InvalidTransition(f"{state.role.name}: {event} without the new lease")
        state.lease = new_lease
        state.jitter = draw
        state.failures = 0
        state.last_error = None
        state.count("extended" if event == Event.EXTENDED else "issued")
    if Action.RETIRE_NOW in actions:
        state.lease = None
        state.count("retired")
    if event == Event.FAILED:
        state.failures += 1
        state.last_error = error
        state.count("failures")
    if Action.BACKOFF in actions:
        state.backoff_until = now + leases.backoff(state.failures, draw)
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
        return None  # the work in flight pokes the refresher when it ends
    if lease is None:
        return state.backoff_until if state.role.warm else None
    wake = lease.expires_at
    if state.backoff_until is not None and now < state.backoff_until:
        return min(wake, state.backoff_until)
    if leases.is_active(state.last_used, state.role.warm, now, timing):
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
        return "issue on first request" if not state.role.warm else "issue (prefetch)"
    if state.failures and state.backoff_until:
        return f"retry at {rfc3339(state.backoff_until)}"
    if leases.is_active(state.last_used, state.role.warm, now, timing):
        kind = leases.refresh_kind(lease, now, timing, state.ttl)
        at = leases.refresh_at(lease, timing, state.ttl, state.jitter)
        return f"{kind} at {rfc3339(at)}"
    verb = "revoke" if state.role.kind.revocable else "expire"
    return f"idle; {verb} at {rfc3339(lease.expires_at)}"
