"""The agent: routes requests to the workers, and owns the lifecycle.

Under the agent's nursery run one **worker** refresher per lease key (worker.py:
a role, or in system mode a role and a consumer), the issuances and extensions
they start, the **reaper** and the orphan sweep (reaper.py), start-up recovery and
the root identity check. The agent itself holds nothing per role but the
``workers`` map; ``reload`` swaps workers for
changed roles, and the views (views.py) are computed from the workers' states.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import trio

from dyncreds import __version__, logs, revocation, views
from dyncreds.access import Asker
from dyncreds.broker import RoleState
from dyncreds.config import Config, ConfigError, Role
from dyncreds.journal import Journal, Record
from dyncreds.keeper import LateRootGate, RootBackend, RootKeeper
from dyncreds.kinds import KINDS
from dyncreds.leases import Lease, LeaseKey, Timing, Window
from dyncreds.protocol import BadRequest, DyncredsError, Unavailable, UnknownRole, rfc3339
from dyncreds.reaper import Reaper, SweepScope, SweepSettings
from dyncreds.worker import Context, Worker, WorkerTable, keeps_key

if TYPE_CHECKING:  # the agent itself never imports boto3
    from dyncreds.aws.iam_user import TaggedUser
    from dyncreds.fleet import Fleet

log = logs.get("agent")

REQUEST_ROUNDS = 3  # a request re-evaluates at most this often after waiting


class Backend(RootBackend, Protocol):
    """What the agent needs from AWS (aws/backend.py; a fake in timing tests)."""

    def configure(self, config: Config) -> None: ...
    async def issue(
        self,
        role: Any,
        lease_id: str,
        window: Window,
        on_step: Callable[[str], None] = ...,
        consumer: str | None = None,
    ) -> Lease: ...
    async def extend(self, lease: Lease, expires_at: float) -> None: ...
    async def revoke(self, record: Record) -> bool: ...
    async def tagged_users(self, agents: set[str] | None = None) -> list[TaggedUser]: ...
    async def finish_root_rotation(self, user_name: str, old_key: str, since: float) -> bool: ...
    async def revoke_sessions(self, role: Any, at: float) -> None: ...
    def restore(self, role: Any) -> Lease | None: ...


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
        offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync,
        audit: Callable[..., None] = lambda op, outcome, **fields: None,
        on_status: Callable[[str], None] = lambda summary: None,
        root_gate: LateRootGate | None = None,
        fleet: Fleet | None = None,
    ):
        """``audit``: the audit log's record(op, outcome, **fields), for what the agent
        does unasked (scheduled root rotations). ``on_status``: called with the
        one-line summary whenever the root locks, unlocks or fails (systemd's STATUS=).
        ``root_gate``: the one the backend's AWS session asks whether the root may act;
        the keeper answers it. ``fleet``: with [fleet] (its takeovers scope the sweep)."""
        self.config = config
        self.journal = journal
        self.backend = backend
        self.agent_id = agent_id
        self.load_config = load_config
        self.offload = offload  # blocking work (reading config); inline on a mock clock
        self.wall = wall
        self.counters: Counter[str] = Counter()
        self.fleet = fleet
        scope = fleet.sweep_scope() if fleet is not None else None
        self.reaper = _reaper(config, journal, backend, wall, rng, self.counters, scope)
        self.ctx = _context(config, journal, backend, self.reaper, wall, rng, self.counters)
        self.mode = config.main.agent.mode
        # A static role's key sealed at rest is served again, not replaced (a restart
        # must not cost one of the user's two key slots).
        self.workers = WorkerTable(
            (LeaseKey(name), Worker(role, self.ctx, backend.restore(role)))
            for name, role in config.roles.items()
            if self._shared(role)
        )
        self.started_at = wall()
        self.root = RootKeeper(
            backend,
            config.main.root,
            wall=wall,
            rng=rng,
            counters=self.counters,
            on_unlock=self._unlocked,
            after_rotation=self.reaper.poke,
            on_change=lambda: on_status(self.summary()),
            audit=audit,
            root_gate=root_gate,
        )
        self.reload_error: str | None = None
        self.stopping = False
        self.revocations: deque[dict[str, str]] = deque(maxlen=20)  # for status

    @property
    def timing(self) -> Timing:
        return self.ctx.timing

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.ctx.nursery = nursery
            log.info(
                "agent.start",
                agent=self.agent_id,
                roles=len(self.workers),
                journal=self.journal.count(),
            )
            nursery.start_soon(self._recover)
            nursery.start_soon(self.reaper.run)
            nursery.start_soon(self.root.identify)
            nursery.start_soon(self.root.run_schedule)
            nursery.start_soon(self.reaper.run_sweeps)
            if self.fleet is not None:
                nursery.start_soon(self.fleet.run)
            for worker in self.workers.values():
                worker.start()
            task_status.started()
            await trio.sleep_forever()

    def now(self) -> float:
        return self.wall()

    async def _recover(self) -> None:
        """Half-created users of a previous run are revoked at once; the rest at
        their announced expiry. Runs beside serving, not before it."""
        failures = 0
        while True:  # a fleet table out of reach at start-up: retried, visibly
            try:
                recovered = await self.journal.recover(self.wall())
                break
            except Exception as exc:  # never the end of the agent: retried
                failures += 1
                log.error("agent.recover_failed", error=logs.said(exc), attempt=failures)
                await trio.sleep(min(2.0**failures, 60.0))
        if recovered:
            log.info("agent.recovering", records=recovered)
        self.reaper.poke()

    def lost(self, lease_id: str) -> None:
        """Fleet: a peer took this lease's record over; stop serving it."""
        for worker in self.workers.values():
            if worker.retire_now(lease_id) is not None:
                log.warning("lease.taken_over", role=worker.name, lease=lease_id)

    def _unlocked(self) -> None:
        """What waited for an unlock goes now: revocations, then warm roles."""
        self.reaper.unlocked()
        for worker in self.workers.values():
            worker.poke()

    # ------------------------------------------------------------------ requests

    def _shared(self, role: Role) -> bool:
        """One lease for everyone: in user mode always; in system mode only a
        kind that cannot be split (one static user's key)."""
        return self.mode == "user" or role.kind.shared

    def role(self, name: str) -> Role:
        role = self.config.roles.get(name)
        if role is None:
            known = ", ".join(sorted(self.config.roles)) or "none configured"
            raise UnknownRole(f"unknown role {name[:64]!r} (known: {known})")
        return role

    def key(self, name: str, asker: Asker | None = None) -> LeaseKey:
        """Whose lease a request is about: the role's, or (system mode) the asker's."""
        role = self.role(name)
        if asker is None or self._shared(role):
            return LeaseKey(name)
        return LeaseKey(name, asker.uid)

    def worker_for(self, name: str, asker: Asker | None = None) -> Worker:
        """The worker of ``name`` for ``asker`` (system mode: made at its first request)."""
        if self.stopping:
            raise Unavailable("the agent is shutting down")
        key = self.key(name, asker)
        worker = self.workers.get(key)
        if worker is None:
            consumer = asker.user if asker is not None and key.uid is not None else None
            worker = Worker(self.role(name), self.ctx, uid=key.uid, consumer=consumer)
            self.workers[key] = worker
            worker.start()
        return worker

    async def credentials(self, name: str, asker: Asker | None = None) -> Lease:
        """A servable lease for the role (system mode: the asker's own): from memory,
        or the one issuance in flight. After waiting, the request asks again - of a
        new worker, if a reload replaced the role meanwhile."""
        self.root.refuse_if_locked()
        if self.fleet is not None and self.role(name).kind.revocable:
            await self.fleet.ensure_current()  # after a pause: were we taken over?
        for _ in range(REQUEST_ROUNDS):
            lease = await self.worker_for(name, asker).request()
            # `lock` is a fence: a lease issued while it came is kept, not handed out.
            self.root.refuse_if_locked()
            if lease is not None:
                return lease
        raise Unavailable(f"role {name}: no usable lease after {REQUEST_ROUNDS} attempts")

    async def rotate(self, name: str) -> tuple[Lease, Lease | None]:
        """A static_user role's rotation, now: a new key; the old one is deleted at
        the expiry it announced."""
        if not self.worker_for(name).state.role.kind.always_warm:
            rotated = " and ".join(k.name for k in KINDS.values() if k.always_warm)
            raise BadRequest(f"rotate is for {rotated} roles; {name} is renewed with `renew`")
        return await self.renew(name)

    async def renew(self, name: str, asker: Asker | None = None) -> tuple[Lease, Lease | None]:
        """Replace the role's lease now (new keys); the old one is retired per its
        rules. Returns the new lease and the one it replaced, if any."""
        worker = self.worker_for(name, asker)
        old = worker.state.lease
        new = await worker.renew()
        return new, (old if old is not None and old.id != new.id else None)

    async def revoke(
        self,
        *,
        lease_id: str | None = None,
        role: str | None = None,
        everything: bool = False,
        force: bool = False,
        owner: int | None = None,
    ) -> list[dict[str, str]]:
        """Revoke now; one result per lease saying what happened to it (revocation.py).
        ``owner``: a non-admin's uid in system mode, whose own leases only are revoked."""
        if role is not None:
            self.role(role)  # an unknown one is an error naming the known ones
        now = self.now()
        done = await revocation.revoke(
            self.workers,
            self.journal,
            self.reaper,
            self.backend.revoke_sessions,
            now,
            lease_id=lease_id,
            role=role,
            everything=everything,
            force=force,
            owner=owner,
        )
        if not force:
            self.counters["revoke_requests"] += 1
            self.revocations.extend({**r, "at": rfc3339(now)} for r in done)
        return done

    # ------------------------------------------------------------------ reload

    async def reload(self) -> list[str]:
        """Re-read configuration, off the event loop. A bad one - or one that cannot
        be read at all - changes nothing and says why."""
        if self.load_config is None:
            raise BadRequest("this agent has no configuration source to reload")
        try:
            new = await self.offload(self.load_config)
            if new.main.fleet != self.config.main.fleet:
                raise BadRequest(
                    "[fleet] changed: restart the agent to join, leave or move a fleet"
                )
            if new.main.agent.mode != self.mode:
                raise BadRequest("agent.mode changed: restart the agent to change who it serves")
            # The root is rebuilt every time: its key file (or store) may have
            # changed underneath an unchanged [root] table.
            await self.offload(self.backend.configure, new)
        except ConfigError as exc:
            more = len(exc.problems) - 1
            hint = f" (+{more} more; run `dyncreds check`)" if more else ""
            self._reject(f"{exc}{hint}")
        except DyncredsError as exc:
            self._reject(exc.message)
        except Exception as exc:  # MemoryError, a bug: still keep the running config
            self._reject(f"reading the configuration failed: {type(exc).__name__}: {exc}"[:300])
        self.ctx.spawn(self.root.identify)
        self.root.configure(new.main.root)
        self._install(new)
        return sorted(self.config.roles)

    def _reject(self, reason: str) -> NoReturn:
        self.reload_error = reason
        log.error("config.reload_rejected", error=reason)
        raise BadRequest(f"configuration not reloaded, the previous one stays: {reason}")

    def _install(self, new: Config) -> None:
        self.reload_error = None
        old_roles = self.config.roles
        self.config = new
        self.ctx.timing = _timing(new)
        self.ctx.issue_timeout = float(new.main.agent.issue_timeout)
        self.reaper.sweep.every = float(new.main.agent.orphan_sweep_every)
        self.reaper.sweep.min_age = float(new.main.agent.orphan_min_age)
        added = [n for n in new.roles if n not in old_roles]
        removed = [n for n in old_roles if n not in new.roles]
        changed = [n for n in new.roles if n in old_roles and new.roles[n] != old_roles[n]]
        kept: dict[str, Lease] = {}
        for name in removed + changed:
            for worker in self.workers.of_role(name):  # every consumer's, in system mode
                del self.workers[worker.key]
                worker.close()
                lease = worker.state.lease
                if lease is not None and keeps_key(worker.state.role, new.roles.get(name)):
                    kept[name] = lease  # the same user's key: no new key for a new period
                elif lease is not None:
                    # Retired per its rules: an iam_user lives to its announced expiry.
                    what = "removed" if name in removed else "changed"
                    log.info(f"config.role_{what}", role=name, lease=lease.id)
        for name in added + changed:
            if not self._shared(new.roles[name]):
                continue  # system mode: each consumer's worker starts at its first request
            worker = Worker(new.roles[name], self.ctx, kept.get(name))
            self.workers[LeaseKey(name)] = worker
            worker.start()
        log.info(
            "config.reloaded",
            added=",".join(added) or "-",
            removed=",".join(removed) or "-",
            changed=",".join(changed) or "-",
        )

    async def rotate_root(self) -> str:
        return await self.root.rotate()

    # ------------------------------------------------------------------ views

    def roles(self, only: list[str] | None = None) -> list[dict[str, Any]]:
        """``only``: the roles a non-admin may see (system mode)."""
        return views.roles_view(
            RoleState(role=role)
            for name, role in self.config.roles.items()
            if only is None or name in only
        )

    def status(self, only: list[str] | None = None, owner: int | None = None) -> dict[str, Any]:
        """``only``/``owner``: a non-admin in system mode sees the roles it may use
        and its own leases, nothing else of anyone's."""
        now = self.now()
        roles = views.lease_rows(
            self.config.roles,
            {
                key: (w.state, w.inflight.step if w.inflight else None, w.consumer)
                for key, w in self.workers.items()
            },
            now,
            self.timing,
            system=self.mode == "system",
            only=only,
            owner=owner,
        )
        current = {w.state.lease.id for w in self.workers.values() if w.state.lease}
        root = self.config.main.root
        return {
            "agent": {
                "id": self.agent_id,
                "pid": os.getpid(),
                "version": __version__,
                "started_at": rfc3339(self.started_at),
                "uptime": int(now - self.started_at),
                "reload_error": self.reload_error,
                "stopping": self.stopping,
                "mode": self.mode,
            },
            "root": self.root.view(views.root_source(root), views.root_warning(root)),
            "roles": roles,
            "retiring": views.retiring_view(self.journal.all(), current) if only is None else [],
            "revocations": list(self.revocations) if only is None else [],
            "fleet": self.fleet.view() if self.fleet and only is None else None,
            "counters": dict(self.counters),
        }

    def summary(self) -> str:
        """systemd's STATUS= line: `systemctl --user status` shows a lock first."""
        states = {f"{k.role}:{k.uid}": w.state for k, w in self.workers.items()}
        text = views.summary(states, self.journal.count())
        locked = self.root.locked_line()
        return f"{locked}; {text}" if locked else text


def _reaper(
    config: Config,
    journal: Journal,
    backend: Backend,
    wall: Callable[[], float],
    rng: Callable[[], float],
    counters: Counter[str],
    scope: SweepScope | None,
) -> Reaper:
    agent = config.main.agent
    sweep = SweepSettings(float(agent.orphan_sweep_every), float(agent.orphan_min_age))
    return Reaper(journal, backend, wall=wall, rng=rng, counters=counters, sweep=sweep, scope=scope)


def _context(
    config: Config,
    journal: Journal,
    backend: Backend,
    reaper: Reaper,
    wall: Callable[[], float],
    rng: Callable[[], float],
    counters: Counter[str],
) -> Context:
    """What every worker shares: the issuer, the journal, the reaper's retire, the
    clocks and the timing the configuration sets."""
    return Context(
        issuer=backend,
        journal=journal,
        retire=reaper.retire,
        wall=wall,
        rng=rng,
        timing=_timing(config),
        issue_timeout=float(config.main.agent.issue_timeout),
        counters=counters,
    )


def _timing(config: Config) -> Timing:
    return Timing(
        min_remaining=float(config.main.agent.min_remaining),
        idle_after=float(config.main.agent.idle_after),
    )
