"""The agent: the trio shell that carries out the broker's decisions.

Three kinds of task run under the agent's nursery:

* one **refresher** per role, sleeping until ``broker.plan_wake`` and asking
  ``broker.classify_timer`` what is due (extend, replace, expire, prefetch);
* short-lived **issuance / extension** tasks, one per role at most (the
  single flight): they run in the agent's nursery, not in the requester's task,
  so a client that hangs up does not cancel an issuance others wait for;
* the **reaper**, which revokes every journaled IAM user whose ``revoke_at``
  has come, with backoff, and marks repeated failures as irrevocable.

Time: ``wall`` (injected; ``time.time`` in production) decides everything about
expiry, and is read at every request. trio's clock only paces sleeps, which are
capped at ``MAX_SLEEP`` so a machine that slept through a timer catches up
within seconds of waking.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from dyncreds import __version__, broker, leases
from dyncreds.broker import Action, Event, Phase, RoleState
from dyncreds.config import Config, ConfigError, Role
from dyncreds.journal import Journal, Record
from dyncreds.leases import Lease, Timing
from dyncreds.protocol import (
    BadRequest,
    DyncredsError,
    Internal,
    Unavailable,
    UnknownRole,
    Upstream,
    rfc3339,
)

if TYPE_CHECKING:  # the agent itself never imports boto3
    from dyncreds.aws.iam_user import TaggedUser

log = logging.getLogger("dyncreds.agent")

MAX_SLEEP = 30.0  # re-read the wall clock at least this often
REVOKE_TIMEOUT = 120.0
IRREVOCABLE_AFTER = 6  # failed revocations before a lease is shown as irrevocable
SLOW_RETRY = 15 * 60.0  # how often an irrevocable lease is retried
REQUEST_ROUNDS = 3  # a request re-evaluates at most this often after waiting
SWEEP_FIRST_AFTER = 5.0  # let start-up recovery go first


class Backend(Protocol):
    """What the agent needs from AWS (aws/backend.py; a fake in timing tests)."""

    def configure(self, config: Config) -> None: ...
    async def issue(
        self, role: Role, lease_id: str, now: float, on_step: Callable[[str], None] = ...
    ) -> Lease: ...
    async def extend(self, lease: Lease, expires_at: float) -> None: ...
    async def delete_user(self, user_name: str) -> bool: ...
    async def identity(self) -> str: ...
    async def rotate_root(self) -> str: ...
    async def tagged_users(self) -> list[TaggedUser]: ...


@dataclass
class Inflight:
    """The one issuance or extension in flight for a role, and its outcome."""

    lease_id: str
    done: trio.Event
    step: str = "starting"
    error: DyncredsError | None = None


class Agent:
    def __init__(
        self,
        config: Config,
        journal: Journal,
        backend: Backend,
        agent_id: str,
        *,
        load_config: Callable[[], Config] | None = None,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ):
        self.config = config
        self.journal = journal
        self.backend = backend
        self.agent_id = agent_id
        self.load_config = load_config
        self.wall = wall
        self.rng = rng
        self.timing = _timing(config)
        self.states: dict[str, RoleState] = {}
        self.inflight: dict[str, Inflight] = {}
        self.pokes: dict[str, trio.Event] = {}
        self.role_scopes: dict[str, trio.CancelScope] = {}
        self.revocations: dict[str, trio.Event] = {}
        self.reaper_poke = trio.Event()
        self.counters: Counter[str] = Counter()
        self.started_at = wall()
        self.root_arn: str | None = None
        self.root_error: str | None = None
        self.reload_error: str | None = None
        self.stopping = False
        self._nursery: trio.Nursery | None = None
        for role in config.roles.values():
            self.states[role.name] = RoleState(role=role, jitter=rng())

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            recovered = self.journal.recover(self.wall())
            pending = self.journal.count()
            log.info(
                "event=start agent=%s roles=%d journal=%d recovering=%d",
                self.agent_id,
                len(self.states),
                pending,
                recovered,
            )
            nursery.start_soon(self._reaper)
            nursery.start_soon(self._identify)
            nursery.start_soon(self._sweeper)
            for state in self.states.values():
                self._start_refresher(state)
            task_status.started()
            await trio.sleep_forever()

    def now(self) -> float:
        return self.wall()

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is None:
            raise Unavailable("the agent is not running")
        self._nursery.start_soon(fn, *args)

    async def _identify(self) -> None:
        try:
            self.root_arn = await self.backend.identity()
            self.root_error = None
            log.info("event=root_identity arn=%s", self.root_arn)
        except DyncredsError as exc:
            self.root_error = exc.message
            log.error("event=root_identity error=%s", exc.message)

    # ------------------------------------------------------------------ requests

    def _state(self, name: str) -> RoleState:
        if self.stopping:
            raise Unavailable("the agent is shutting down")
        state = self.states.get(name)
        if state is None:
            known = ", ".join(sorted(self.states)) or "none configured"
            raise UnknownRole(f"unknown role {name[:64]!r} (known: {known})")
        return state

    async def credentials(self, name: str) -> Lease:
        """A servable lease for the role: from memory, or the one issuance in flight."""
        state = self._state(name)
        for _ in range(REQUEST_ROUNDS):
            now = self.now()
            was_active = leases.is_active(state.last_used, state.role.prefetch, now, self.timing)
            actions = broker.step(
                state, broker.classify_request(state, now, self.timing), now, self.timing
            )
            if Action.SERVE in actions:
                self.counters["served"] += 1
                if not was_active:
                    self._poke(name)  # the refresher now keeps this role warm
                assert state.lease is not None
                return state.lease
            if Action.ISSUE in actions:
                self._start(state, "issue")
            inflight = self.inflight[name]
            await inflight.done.wait()
            if inflight.error is not None:
                self.counters["errors"] += 1
                raise inflight.error
            state = self._state(name)
        raise Unavailable(f"role {name}: no usable lease after {REQUEST_ROUNDS} attempts")

    async def renew(self, name: str) -> Lease:
        """Replace the role's lease now (new keys); the old one is retired per its rules."""
        old = self._state(name).lease
        while name in self.inflight:  # let what is under way finish first
            await self.inflight[name].done.wait()
        state = self._state(name)  # a reload may have replaced it meanwhile
        if state.lease is None or (old is not None and state.lease.id == old.id):
            # Nothing is in flight, so the phase is READY or IDLE, and no await
            # separates this step from the issuance it starts.
            event = Event.DUE_REPLACE if state.phase == Phase.READY else Event.REQUEST_STALE
            broker.step(state, event, self.now(), self.timing)
            self._start(state, "issue")
            inflight = self.inflight[name]
            await inflight.done.wait()
            if inflight.error is not None:
                raise inflight.error
        if state.lease is None:
            raise Unavailable(f"role {name}: renewal did not produce a lease")
        return state.lease

    # ------------------------------------------------------------------ issuance

    def _start(self, state: RoleState, kind: str) -> None:
        name = state.role.name
        lease_id = (
            leases.new_lease_id(name)
            if kind == "issue"
            else (state.lease.id if state.lease else "")
        )
        inflight = Inflight(lease_id=lease_id, done=trio.Event())
        self.inflight[name] = inflight
        if kind == "issue":
            self._spawn(self._issue, state, inflight)
        else:
            self._spawn(self._extend, state, inflight)

    async def _issue(self, state: RoleState, inflight: Inflight) -> None:
        role = state.role
        started = self.now()
        lease: Lease | None = None
        error: DyncredsError | None = None

        def on_step(step: str) -> None:
            inflight.step = step

        try:
            with trio.fail_after(float(self.config.main.agent.issue_timeout)):
                lease = await self.backend.issue(role, inflight.lease_id, started, on_step)
        except trio.TooSlowError:
            error = Upstream(
                f"issuing credentials for role {role.name} took longer than "
                f"{self.config.main.agent.issue_timeout}s",
                aws_code="RequestTimeout",
            )
        except DyncredsError as exc:
            error = exc
        except Exception as exc:
            log.exception("event=issue role=%s lease=%s outcome=bug", role.name, inflight.lease_id)
            error = Internal(
                f"issuing credentials for role {role.name} failed: {type(exc).__name__}"
            )
        now = self.now()
        if self.states.get(role.name) is not state:
            # The role was removed or changed while we worked: nobody wants this lease.
            if lease is not None:
                self._retire(lease, now)
        elif lease is not None:
            self._apply(state, Event.ISSUED, now, new_lease=lease)
            log.info(
                "event=issued role=%s lease=%s type=%s key=%s expires=%s seconds=%.2f",
                role.name,
                lease.id,
                lease.credential_type,
                lease.access_key_id,
                rfc3339(lease.expires_at),
                now - started,
            )
        else:
            assert error is not None
            self._apply(state, Event.FAILED, now, error=error.message)
            log.warning(
                "event=issue_failed role=%s lease=%s error=%s",
                role.name,
                inflight.lease_id,
                error.message,
            )
        self._finish(state, inflight, error)

    async def _extend(self, state: RoleState, inflight: Inflight) -> None:
        lease = state.lease
        assert lease is not None
        now = self.now()
        expires_at = leases.extended_expiry(lease, now, state.ttl)
        error: DyncredsError | None = None
        try:
            # Journal first: once a client may see the later expiry, the reaper must
            # not revoke at the earlier one.
            self.journal.extend(lease.id, expires_at)
            with trio.fail_after(float(self.config.main.agent.issue_timeout)):
                await self.backend.extend(lease, expires_at)
        except trio.TooSlowError:
            error = Upstream("renewing the lease timed out", aws_code="RequestTimeout")
        except DyncredsError as exc:
            error = exc
        now = self.now()
        if self.states.get(state.role.name) is not state:
            pass
        elif error is None and state.lease is not None and state.lease.id == lease.id:
            self._apply(state, Event.EXTENDED, now, new_lease=leases.extend(lease, expires_at))
            log.info(
                "event=renewed role=%s lease=%s expires=%s",
                lease.role,
                lease.id,
                rfc3339(expires_at),
            )
        elif error is None:
            self._apply(state, Event.EXTENDED, now)
        else:
            self._apply(state, Event.FAILED, now, error=error.message)
            log.warning(
                "event=renew_failed role=%s lease=%s error=%s", lease.role, lease.id, error.message
            )
        self._finish(state, inflight, error)

    def _finish(self, state: RoleState, inflight: Inflight, error: DyncredsError | None) -> None:
        inflight.error = error
        if self.inflight.get(state.role.name) is inflight:
            del self.inflight[state.role.name]
        inflight.done.set()
        self._poke(state.role.name)

    def _apply(
        self,
        state: RoleState,
        event: Event,
        now: float,
        *,
        new_lease: Lease | None = None,
        error: str | None = None,
    ) -> tuple[Action, ...]:
        old = state.lease
        actions = broker.step(
            state,
            event,
            now,
            self.timing,
            new_lease=new_lease,
            error=error,
            backoff_jitter=self.rng(),
        )
        if Action.INSTALL in actions:
            state.jitter = self.rng()
            if old is not None and new_lease is not None and old.id != new_lease.id:
                # Retired at the expiry it announced: its journal row already says so.
                log.info(
                    "event=replaced role=%s old=%s new=%s old_expires=%s",
                    old.role,
                    old.id,
                    new_lease.id,
                    rfc3339(old.expires_at),
                )
        if Action.RETIRE_NOW in actions and old is not None:
            self._retire(old, now)
        return actions

    def _retire(self, lease: Lease, now: float) -> None:
        """Stop using a lease now; an iam_user is handed to the reaper."""
        if lease.credential_type == "iam_user":
            self.journal.revoke_now(lease.id, now)
            self.reaper_poke.set()
        self.counters["retired"] += 1

    # ------------------------------------------------------------------ refresher

    def _poke(self, name: str) -> None:
        event = self.pokes.get(name)
        if event is not None:
            event.set()

    def _start_refresher(self, state: RoleState) -> None:
        scope = trio.CancelScope()
        self.role_scopes[state.role.name] = scope
        self.pokes[state.role.name] = trio.Event()
        self._spawn(self._refresher, state, scope)

    async def _refresher(self, state: RoleState, scope: trio.CancelScope) -> None:
        name = state.role.name
        with scope:
            while True:
                now = self.now()
                event = broker.classify_timer(state, now, self.timing)
                if event is not None:
                    actions = self._apply(state, event, now)
                    if Action.ISSUE in actions:
                        self._start(state, "issue")
                    elif Action.EXTEND in actions:
                        self._start(state, "extend")
                    if event == Event.EXPIRED:
                        self.counters["expired"] += 1
                    continue
                wake = broker.plan_wake(state, now, self.timing)
                delay = MAX_SLEEP if wake is None else min(max(wake - now, 0.0), MAX_SLEEP)
                poke = self.pokes[name]
                with trio.move_on_after(delay):
                    await poke.wait()
                if poke.is_set():
                    self.pokes[name] = trio.Event()

    # ------------------------------------------------------------------ reaper

    async def _reaper(self) -> None:
        while True:
            now = self.now()
            due = self.journal.due(now)
            if due:
                async with trio.open_nursery() as nursery:
                    for record in due:
                        nursery.start_soon(self._revoke_record, record)
                continue
            next_due = self.journal.next_due()
            delay = MAX_SLEEP if next_due is None else min(max(next_due - now, 0.0), MAX_SLEEP)
            with trio.move_on_after(delay):
                await self.reaper_poke.wait()
            self.reaper_poke = trio.Event()

    async def _revoke_record(self, record: Record) -> None:
        self.journal.revoking(record.lease_id)
        try:
            with trio.fail_after(REVOKE_TIMEOUT):
                existed = await self.backend.delete_user(record.user_name)
        except (DyncredsError, trio.TooSlowError) as exc:
            message = exc.message if isinstance(exc, DyncredsError) else "timed out"
            attempts = record.attempts + 1
            delay = (
                leases.backoff(attempts, self.rng(), cap=SLOW_RETRY)
                if attempts < IRREVOCABLE_AFTER
                else SLOW_RETRY
            )
            self.journal.revoke_failed(record.lease_id, message, self.now() + delay)
            self.counters["revoke_failures"] += 1
            log.warning(
                "event=revoke_failed lease=%s user=%s attempts=%d retry_in=%.0fs error=%s",
                record.lease_id,
                record.user_name,
                attempts,
                delay,
                message,
            )
        else:
            self.journal.forget(record.lease_id)
            self.counters["revoked"] += 1
            log.info(
                "event=revoked lease=%s user=%s existed=%s",
                record.lease_id,
                record.user_name,
                existed,
            )
        done = self.revocations.pop(record.lease_id, None)
        if done is not None:
            done.set()

    async def _revoke_and_wait(self, lease_id: str) -> None:
        done = self.revocations.setdefault(lease_id, trio.Event())
        self.journal.revoke_now(lease_id, self.now())
        self.reaper_poke.set()
        with trio.move_on_after(REVOKE_TIMEOUT + 10):
            await done.wait()
        record = self.journal.get(lease_id)
        if record is not None:
            raise Upstream(
                f"lease {lease_id} could not be revoked yet (will retry): "
                f"{record.last_error or 'pending'}",
                aws_code="RevokeFailed",
            )

    # ------------------------------------------------------------------ orphans

    async def _sweeper(self) -> None:
        await trio.sleep(SWEEP_FIRST_AFTER)
        while True:
            try:
                await self.sweep_orphans()
            except DyncredsError as exc:
                log.warning("event=orphan_sweep error=%s", exc.message)
            await trio.sleep(float(self.config.main.agent.orphan_sweep_every))

    async def sweep_orphans(self) -> list[str]:
        """Users carrying this agent's tag that the journal does not know - the
        journal was lost or restored from an old copy - are handed to the reaper
        once older than ``orphan_min_age`` (younger ones may be issuing right now).
        Users of other agents are never touched: the tag must be ours."""
        now = self.now()
        known = self.journal.user_names()
        min_age = float(self.config.main.agent.orphan_min_age)
        found = []
        for user in await self.backend.tagged_users():
            if user.name in known or now - user.created_at < min_age:
                continue
            lease_id = user.tags.get("dyncreds:lease") or f"orphan/{user.name}"
            if self.journal.get(lease_id) is not None:
                lease_id = f"orphan/{user.name}"
            self.journal.creating(
                lease_id, user.tags.get("dyncreds:role", "?"), user.name, user.created_at, now
            )
            found.append(user.name)
            log.warning("event=orphan_found user=%s lease=%s", user.name, lease_id)
        if found:
            self.counters["orphans"] += len(found)
            self.reaper_poke.set()
        return found

    # ------------------------------------------------------------------ revoke

    async def revoke(
        self,
        *,
        lease_id: str | None = None,
        role: str | None = None,
        everything: bool = False,
        force: bool = False,
    ) -> list[str]:
        now = self.now()
        targets: list[str] = []
        if everything:
            states = list(self.states.values())
        elif role is not None:
            states = [self._state(role)]
        else:
            states = [s for s in self.states.values() if s.lease and s.lease.id == lease_id]
        for state in states:
            if state.lease is not None and (lease_id is None or state.lease.id == lease_id):
                targets.append(state.lease.id)
                self._apply(state, Event.REVOKE, now)
                self._poke(state.role.name)
        for record in self.journal.all():
            if record.lease_id in targets:
                continue
            if everything or record.lease_id == lease_id or (role and record.role == role):
                targets.append(record.lease_id)
        if lease_id is not None and not targets:
            raise BadRequest(f"no lease {lease_id[:80]!r} (see `dyncreds status`)")
        if force:
            for target in targets:
                self.journal.forget(target)
            log.warning("event=forgotten leases=%s", ",".join(targets))
            return targets
        revoked: list[str] = []
        failures: list[str] = []

        async def one(target: str) -> None:
            if self.journal.get(target) is None:
                revoked.append(target)  # STS credentials: nothing in AWS to delete
                return
            try:
                await self._revoke_and_wait(target)
                revoked.append(target)
            except DyncredsError as exc:
                failures.append(exc.message)

        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(one, target)
        if failures:
            raise Upstream(
                f"{len(failures)} of {len(targets)} revocations failed: {failures[0]}",
                aws_code="RevokeFailed",
            )
        self.counters["revoke_requests"] += 1
        return sorted(revoked)

    # ------------------------------------------------------------------ reload

    def reload(self) -> list[str]:
        """Re-read configuration. A bad one changes nothing and says why."""
        if self.load_config is None:
            raise BadRequest("this agent has no configuration source to reload")
        try:
            new = self.load_config()
        except ConfigError as exc:
            more = (
                f" (+{len(exc.problems) - 1} more; run `dyncreds check`)"
                if len(exc.problems) > 1
                else ""
            )
            self.reload_error = f"{exc}{more}"
            log.error("event=reload outcome=rejected error=%s", self.reload_error)
            raise BadRequest(
                f"configuration not reloaded, the previous one stays: {self.reload_error}"
            ) from None
        if new.main.root != self.config.main.root or new.main.agent != self.config.main.agent:
            try:
                self.backend.configure(new)
            except DyncredsError as exc:
                self.reload_error = exc.message
                raise BadRequest(
                    f"configuration not reloaded, the previous one stays: {exc.message}"
                ) from None
            self._spawn(self._identify)
        self.reload_error = None
        old_roles = self.config.roles
        self.config = new
        self.timing = _timing(new)
        added = [n for n in new.roles if n not in old_roles]
        removed = [n for n in old_roles if n not in new.roles]
        changed = [n for n in new.roles if n in old_roles and new.roles[n] != old_roles[n]]
        for name in removed + changed:
            state = self.states.pop(name)
            self.role_scopes.pop(name).cancel()
            self.pokes.pop(name, None)
            if state.lease is not None:
                # Retired per its rules: an iam_user lives to its announced expiry.
                log.info(
                    "event=role_%s role=%s lease=%s",
                    "removed" if name in removed else "changed",
                    name,
                    state.lease.id,
                )
        for name in added + changed:
            state = RoleState(role=new.roles[name], jitter=self.rng())
            self.states[name] = state
            self._start_refresher(state)
        log.info(
            "event=reload outcome=ok added=%s removed=%s changed=%s",
            ",".join(added) or "-",
            ",".join(removed) or "-",
            ",".join(changed) or "-",
        )
        return sorted(self.states)

    async def rotate_root(self) -> str:
        key = await self.backend.rotate_root()
        self.counters["root_rotations"] += 1
        await self._identify()
        return key

    # ------------------------------------------------------------------ status

    def roles(self) -> list[dict[str, Any]]:
        return [
            {
                "name": s.role.name,
                "type": s.role.credential_type,
                "ttl": s.role.ttl,
                "max_ttl": s.role.max_ttl,
                "region": s.role.region,
                "prefetch": s.role.prefetch,
            }
            for s in sorted(self.states.values(), key=lambda s: s.role.name)
        ]

    def status(self) -> dict[str, Any]:
        now = self.now()
        roles = []
        for name in sorted(self.states):
            state = self.states[name]
            lease = state.lease
            inflight = self.inflight.get(name)
            roles.append(
                {
                    "name": name,
                    "type": state.role.credential_type,
                    "state": state.phase.value,
                    "lease_id": lease.id if lease else None,
                    "access_key_id": lease.access_key_id if lease else None,
                    "user_name": lease.user_name if lease else None,
                    "issued_at": rfc3339(lease.issued_at) if lease else None,
                    "expires_at": rfc3339(lease.expires_at) if lease else None,
                    "remaining": max(0, int(lease.expires_at - now)) if lease else None,
                    "next_action": broker.describe_next(state, now, self.timing)
                    + (f" ({inflight.step})" if inflight else ""),
                    "last_used": rfc3339(state.last_used) if state.last_used else None,
                    "last_error": state.last_error,
                    "counters": dict(state.counters),
                }
            )
        current = {s.lease.id for s in self.states.values() if s.lease}
        retiring = [
            {
                "lease_id": r.lease_id,
                "role": r.role,
                "user_name": r.user_name,
                "access_key_id": r.access_key_id,
                "state": r.state,
                "revoke_at": rfc3339(r.revoke_at),
                "attempts": r.attempts,
                "last_error": r.last_error,
                "irrevocable": r.attempts >= IRREVOCABLE_AFTER,
            }
            for r in self.journal.all()
            if r.lease_id not in current
        ]
        return {
            "agent": {
                "id": self.agent_id,
                "pid": os.getpid(),
                "version": __version__,
                "started_at": rfc3339(self.started_at),
                "uptime": int(now - self.started_at),
                "reload_error": self.reload_error,
                "stopping": self.stopping,
            },
            "root": {
                "arn": self.root_arn,
                "error": self.root_error,
                "region": self.config.main.root.region,
                "source": (
                    "credentials_file"
                    if self.config.main.root.credentials_file
                    else "profile"
                    if self.config.main.root.profile
                    else "default chain"
                ),
            },
            "roles": roles,
            "retiring": retiring,
            "counters": dict(self.counters),
        }

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        ready = sum(1 for s in self.states.values() if s.lease is not None)
        errors = [s for s in self.states.values() if s.last_error]
        text = f"{len(self.states)} roles, {ready} leases, {self.journal.count()} users tracked"
        if errors:
            text += f"; last error ({errors[0].role.name}): {errors[0].last_error}"[:200]
        return text


def _timing(config: Config) -> Timing:
    return Timing(
        min_remaining=float(config.main.agent.min_remaining),
        idle_after=float(config.main.agent.idle_after),
    )
