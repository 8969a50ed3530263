"""One worker per lease key (a role; in system mode a role and a consumer): its
state, its single flight, its refresher.

The worker is the shell around ``broker``: it turns what happens (a request, a
timer, an issuance that ended) into an ``Event``, lets ``broker.step`` decide,
and carries out the returned actions in ``_execute`` - one ``match`` over every
``Action``, checked for exhaustiveness by mypy. It never changes ``RoleState``
itself.

Issuances and extensions run in the agent's nursery, not in the requester's
task, so a client that hangs up does not cancel work others wait for.

Time: ``wall`` (injected; ``time.time`` in production) decides everything about
expiry, and is read at every request. trio's clock only paces sleeps, which are
capped at ``MAX_SLEEP`` so a machine that slept through a timer catches up within
seconds of waking.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, assert_never

import trio

from dyncreds import broker, leases, logs
from dyncreds.broker import Action, Event, RoleState
from dyncreds.config import Role
from dyncreds.journal import Journal
from dyncreds.leases import Lease, LeaseKey, Timing
from dyncreds.protocol import DyncredsError, Internal, Unavailable, Upstream, rfc3339

log = logs.get("agent")

MAX_SLEEP = 30.0  # re-read the wall clock at least this often


class LeaseMaker(Protocol):
    """What a worker needs from AWS to make and extend its leases (aws/backend.py;
    a fake in timing tests)."""

    async def issue(
        self,
        role: Role,
        lease_id: str,
        window: leases.Window,
        on_step: Callable[[str], None] = ...,
        consumer: str | None = None,
    ) -> Lease: ...
    async def extend(self, lease: Lease, expires_at: float) -> None: ...


@dataclass
class Context:
    """What every worker shares; the agent updates the settings on reload."""

    issuer: LeaseMaker
    journal: Journal
    retire: Callable[[str], Awaitable[None]]  # hand a journaled lease to the reaper
    wall: Callable[[], float]
    rng: Callable[[], float]
    timing: Timing
    issue_timeout: float
    counters: Counter[str] = field(default_factory=Counter)
    nursery: trio.Nursery | None = None

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self.nursery is None:
            raise Unavailable("the agent is not running")
        self.nursery.start_soon(fn, *args)


@dataclass
class Inflight:
    """The one issuance or extension in flight for a role, and its outcome."""

    lease_id: str
    extending: Lease | None = None  # the lease an extension moves forward
    done: trio.Event = field(default_factory=trio.Event)
    step: str = "starting"
    error: DyncredsError | None = None  # waiters raise it
    failure: DyncredsError | None = None  # how it ended, even if waiters were not failed

    def on_step(self, step: str) -> None:
        self.step = step


class Worker:
    def __init__(
        self,
        role: Role,
        ctx: Context,
        lease: Lease | None = None,
        *,
        uid: int | None = None,
        consumer: str | None = None,
    ):
        """``lease``: one carried over from the role's previous worker (a reload
        that changed a static user's period keeps its key; the next rotation
        follows the new period). ``uid``/``consumer``: system mode, whose lease
        this is (``{user}`` in the names AWS sees is ``consumer``)."""
        self.key = LeaseKey(role.name, uid)
        self.consumer = consumer
        self.ctx = ctx
        self.state = RoleState(role=role, jitter=ctx.rng())
        if lease is not None:
            self.state.lease, self.state.phase = lease, broker.Phase.READY
        self.inflight: Inflight | None = None
        self.closed = False
        self._poke = trio.Event()
        self._scope = trio.CancelScope()

    @property
    def name(self) -> str:
        return self.state.role.name

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.ctx.spawn(self._refresher)

    def close(self) -> None:
        """The role was removed or changed: stop refreshing. Work in flight ends on
        its own and its lease, nobody's now, is retired."""
        self.closed = True
        self._scope.cancel()

    def poke(self) -> None:
        self._poke.set()

    # ------------------------------------------------------------------ requests

    async def request(self) -> Lease | None:
        """The lease if it may be served now; else wait for the work in flight and
        return None (the caller asks again, perhaps of a newer worker)."""
        now = self.ctx.wall()
        was_active = leases.is_active(
            self.state.last_used, self.state.role.warm, now, self.ctx.timing
        )
        actions = self._apply(broker.classify_request(self.state, now, self.ctx.timing), now)
        if Action.SERVE in actions:
            self.ctx.counters["served"] += 1
            if not was_active:
                self.poke()  # the refresher now keeps this role warm
            assert self.state.lease is not None
            return self.state.lease
        await self._wait()
        return None

    async def renew(self) -> Lease:
        """New keys now: wait for whatever is in flight, then one replacement
        (unless what was in flight already was one)."""
        old = self.state.lease
        while True:
            actions = self._apply(Event.RENEW, self.ctx.wall())
            inflight = await self._wait()
            lease = self.state.lease
            if Action.ISSUE in actions and inflight.failure is not None:
                # Our replacement failed; the old lease is still served (WAKE, not
                # FAIL_WAITERS), but a renew that made no new keys must say so.
                raise inflight.failure
            if Action.ISSUE in actions or self.closed:
                if lease is None:
                    raise Unavailable(f"role {self.name}: renewal did not produce a lease")
                return lease
            if lease is not None and (old is None or lease.id != old.id):
                return lease

    def retire_now(self, lease_id: str | None = None) -> Lease | None:
        """Stop serving the current lease now (if it is ``lease_id``, when given) and
        return it; a revocable one goes to the reaper, which revokes it at its
        ``revoke_at`` - `revoke` (revocation.py) asks the reaper for more."""
        lease = self.state.lease
        if lease is None or (lease_id is not None and lease.id != lease_id):
            return None
        self._apply(Event.REVOKE, self.ctx.wall())
        return lease

    async def _wait(self) -> Inflight:
        inflight = self.inflight
        assert inflight is not None, "WAIT without work in flight"
        await inflight.done.wait()
        if inflight.error is not None:
            self.ctx.counters["errors"] += 1
            raise inflight.error
        return inflight

    # ------------------------------------------------------------------ the executor

    def _apply(
        self,
        event: Event,
        now: float,
        *,
        new_lease: Lease | None = None,
        error: DyncredsError | None = None,
    ) -> tuple[Action, ...]:
        old = self.state.lease
        actions = broker.step(
            self.state,
            event,
            now,
            new_lease=new_lease,
            error=error.message if error else None,
            draw=self.ctx.rng(),
        )
        for action in actions:
            self._execute(action, old, error)
        return actions

    def _execute(self, action: Action, old: Lease | None, error: DyncredsError | None) -> None:
        match action:
            case Action.SERVE | Action.WAIT:
                pass  # the requester's own: request() and renew() act on them
            case Action.ISSUE:
                self._begin(self._issue, Inflight(leases.new_lease_id(self.name)))
            case Action.EXTEND:
                assert old is not None
                self._begin(self._extend, Inflight(old.id, extending=old))
            case Action.INSTALL:
                new = self.state.lease
                if old is not None and new is not None and old.id != new.id:
                    # The old lease retires at the expiry it announced: its journal
                    # record already says so.
                    log.info(
                        "lease.replaced",
                        role=self.name,
                        old=old.id,
                        new=new.id,
                        old_expires=rfc3339(old.expires_at),
                    )
            case Action.RETIRE_NOW:
                if old is not None:
                    self._retire(old)
            case Action.WAKE:
                self._end(None, failure=error)
            case Action.FAIL_WAITERS:
                self._end(error)
            case Action.SCHEDULE | Action.BACKOFF:
                self.poke()
            case _:
                assert_never(action)

    def _begin(self, task: Callable[[Inflight], Awaitable[None]], inflight: Inflight) -> None:
        self.inflight = inflight
        self.ctx.spawn(task, inflight)

    def _end(self, error: DyncredsError | None, failure: DyncredsError | None = None) -> None:
        """The work in flight is over: ``error`` fails its waiters; ``failure`` is
        only recorded (a refresh that failed while the current lease still serves)."""
        inflight = self.inflight
        if inflight is None:
            return
        self.inflight = None
        inflight.error = error
        inflight.failure = failure or error
        inflight.done.set()

    def _retire(self, lease: Lease) -> None:
        """Stop using a lease now; a journaled (revocable) one goes to the reaper."""
        self.ctx.counters["retired"] += 1
        if lease.user_name is not None and self.state.role.kind.revocable:
            self.ctx.spawn(self.ctx.retire, lease.id)

    # ------------------------------------------------------------------ work in flight

    async def _issue(self, inflight: Inflight) -> None:
        role = self.state.role
        started = self.ctx.wall()
        lease: Lease | None = None
        error: DyncredsError | None = None
        try:
            with trio.fail_after(self.ctx.issue_timeout):
                lease = await self.ctx.issuer.issue(
                    role,
                    inflight.lease_id,
                    leases.window(role, started, self.ctx.timing),
                    inflight.on_step,
                    consumer=self.consumer,
                )
        except trio.TooSlowError:
            error = Upstream(
                f"issuing credentials for role {role.name} took longer than "
                f"{self.ctx.issue_timeout:g}s",
                aws_code="RequestTimeout",
            )
        except DyncredsError as exc:
            error = exc
        except Exception as exc:
            log.exception("lease.issue_bug", role=role.name, lease=inflight.lease_id)
            error = Internal(
                f"issuing credentials for role {role.name} failed: {type(exc).__name__}"
            )
        now = self.ctx.wall()
        if self.closed:
            if lease is not None:
                self._retire(lease)  # the role was removed or changed meanwhile
            self._end(None)
        elif lease is not None:
            self._apply(Event.ISSUED, now, new_lease=lease)
            log.info(
                "lease.issued",
                role=role.name,
                lease=lease.id,
                type=lease.credential_type,
                key=lease.access_key_id,
                expires=rfc3339(lease.expires_at),
                seconds=round(now - started, 2),
            )
        else:
            assert error is not None
            self._apply(Event.FAILED, now, error=error)
            log.warning(
                "lease.issue_failed", role=role.name, lease=inflight.lease_id, error=error.message
            )
            if role.kind.revocable:  # whatever was created goes now, after the answer
                self.ctx.spawn(self.ctx.retire, inflight.lease_id)

    async def _extend(self, inflight: Inflight) -> None:
        lease = inflight.extending
        assert lease is not None
        expires_at = leases.extended_expiry(lease, self.ctx.wall(), self.state.ttl)
        error: DyncredsError | None = None
        try:
            # Journal first: once a client may see the later expiry, the reaper must
            # not revoke at the earlier one.
            await self.ctx.journal.extend(lease.id, expires_at)
            with trio.fail_after(self.ctx.issue_timeout):
                await self.ctx.issuer.extend(lease, expires_at)
        except trio.TooSlowError:
            error = Upstream("extending the lease timed out", aws_code="RequestTimeout")
        except DyncredsError as exc:
            error = exc
        now = self.ctx.wall()
        if self.closed:
            self._end(None)
        elif error is None:
            self._apply(Event.EXTENDED, now, new_lease=leases.extend(lease, expires_at))
            log.info("lease.extended", role=self.name, lease=lease.id, expires=rfc3339(expires_at))
        else:
            self._apply(Event.FAILED, now, error=error)
            log.warning("lease.extend_failed", role=self.name, lease=lease.id, error=error.message)

    # ------------------------------------------------------------------ the refresher

    async def _refresher(self) -> None:
        with self._scope:
            while True:
                now = self.ctx.wall()
                event = broker.classify_timer(self.state, now, self.ctx.timing)
                if event is not None:
                    self._apply(event, now)
                    if event == Event.EXPIRED:
                        self.ctx.counters["expired"] += 1
                    continue
                wake = broker.plan_wake(self.state, now, self.ctx.timing)
                delay = MAX_SLEEP if wake is None else min(max(wake - now, 0.0), MAX_SLEEP)
                with trio.move_on_after(delay):
                    await self._poke.wait()
                if self._poke.is_set():
                    self._poke = trio.Event()


def keeps_key(old: Role, new: Role | None) -> bool:
    """A kind's lease stays valid whatever else of its role changed, as long as
    the fields its row names are unchanged (a static user's key: still the same
    user's): a reload carries the lease over."""
    fields = old.kind.kept_while_same
    return (
        new is not None
        and old.credential_type == new.credential_type
        and bool(fields)
        and all(getattr(old, f) == getattr(new, f) for f in fields)
    )


class WorkerTable(dict[LeaseKey, Worker]):
    """The agent's workers by lease key. A role name alone means its shared
    worker: every worker in user mode, and static users in system mode."""

    def __getitem__(self, key: LeaseKey | str) -> Worker:
        return super().__getitem__(LeaseKey(key) if isinstance(key, str) else key)

    def of_role(self, name: str) -> list[Worker]:
        return [w for key, w in self.items() if key.role == name]

    def roles(self) -> list[str]:
        return sorted({key.role for key in self})
