"""The root, seen from the agent: its identity, its MFA lock, its rotation on
demand (`rotate-root`) and on a schedule (``rotate_every``).

The keeper owns the lock (rootlock.RootLock) and answers "may the root act now"
from the agent's injected clock (``may_act``): requests ask it, and so does the
AWS session before every call it signs, through the ``LateRootGate`` it is given.
``lock`` is a fence: an unlock in flight when one comes does not unlock.

The schedule's origin is the current key's CreateDate in IAM, not anything
local: a restart neither postpones a rotation nor repeats one, and a key
rotated by hand restarts the clock. Rotations never run concurrently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import trio

from dyncreds import leases, logs
from dyncreds.config import RootSettings
from dyncreds.protocol import BadRequest, DyncredsError, Locked, Unavailable, rfc3339
from dyncreds.rootlock import RootLock

log = logs.get("root")

RECHECK = 3600.0  # look at the key's age at least this often (the clock may jump)
RETRY_CAP = 3600.0  # a failing scheduled rotation is retried at most this far apart
OVERTAKEN = (
    "`dyncreds lock` came while this unlock was in flight, and wins: the agent stays "
    "locked; run `dyncreds unlock` again"
)


class RootBackend(Protocol):
    """What the keeper needs from AWS (aws/backend.py; a fake in timing tests)."""

    @property
    def root_problem(self) -> str | None: ...
    async def identity(self) -> str: ...
    async def unlock(self, code: str) -> float: ...
    def forget_session(self) -> None: ...
    async def rotate_root(self) -> str: ...
    async def root_key_created(self) -> float: ...


class LateRootGate:
    """The keeper's answer to "may the root act now", for the AWS session.

    The session asks before every call it signs, and the keeper drives that
    session (unlock, lock, rotation): they need each other. So this is made
    first, given to the session as it is built, and the keeper puts itself in
    it when it is made."""

    def __init__(self) -> None:
        self.keeper: RootKeeper | None = None

    def may_act(self) -> None:
        keeper = self.keeper
        if keeper is None:  # no AWS call is made before the agent exists
            raise Unavailable("the agent is not running yet")
        keeper.may_act()

    def session_ended(self) -> Locked:
        if self.keeper is None:
            raise Unavailable("the agent is not running yet")
        return self.keeper.session_ended()


class RootKeeper:
    def __init__(
        self,
        backend: RootBackend,
        settings: RootSettings,
        *,
        wall: Callable[[], float],
        rng: Callable[[], float],
        counters: Counter[str],
        root_gate: LateRootGate | None = None,
        on_unlock: Callable[[], None] = lambda: None,
        after_rotation: Callable[[], None] = lambda: None,
        on_change: Callable[[], None] = lambda: None,
        audit: Callable[..., None] = lambda op, outcome, **fields: None,
    ):
        self.backend = backend
        self.settings = settings
        self.wall = wall  # the agent's: every lock decision reads it
        self.lock = RootLock(settings.mfa_serial)
        if root_gate is not None:
            root_gate.keeper = self
        self.rng = rng
        self.counters = counters  # the agent's: root_rotations, on demand or scheduled
        self.on_unlock = on_unlock  # the reaper and the workers retry what waited
        # The reaper: a rotation that did not finish left it a record, due now.
        self.after_rotation = after_rotation
        self.on_change = on_change  # systemd's STATUS= (daemon)
        # The audit log's record(op, outcome, **fields) (daemon): scheduled rotations.
        self.audit = audit
        self.arn: str | None = None
        self.error: str | None = None
        self.next_rotation: float | None = None
        self.rotation_error: str | None = None
        self._rotating = trio.Lock()
        self._wake = trio.Event()  # a reload or an unlock: look at the schedule again

    def configure(self, settings: RootSettings) -> None:
        if settings.mfa_serial != self.settings.mfa_serial:
            # Another MFA device: its own lock (the backend's reload dropped the session).
            self.lock = RootLock(settings.mfa_serial)
        self.settings = settings
        self._wake.set()

    async def identify(self) -> None:
        if self.lock.locked(self.wall()):
            return  # after the unlock
        try:
            self.arn = await self.backend.identity()
            self.error = None
            log.info("root.identity", arn=self.arn)
        except DyncredsError as exc:
            self.error = exc.message
            log.error("root.identity_failed", error=exc.message)

    # ------------------------------------------------------------------ lock

    def may_act(self) -> None:
        """May the root make an AWS call (other than GetSessionToken) now, by the
        agent's clock? Raises ``Locked`` saying what to do if not."""
        now = self.wall()
        if self.lock.locked(now):
            raise Locked(self.lock.why(now))

    def session_ended(self) -> Locked:
        """AWS refused the MFA session (it ended, or was revoked): locked, but warm
        leases are still served. The error the refused call raises."""
        self.lock.ended()
        return Locked(self.lock.why(self.wall()))

    async def unlock(self, code: str) -> float:
        if not self.lock.enabled:
            raise BadRequest("unlock needs root.mfa_serial in config.toml; this agent has no lock")
        epoch = self.lock.epoch  # a `lock` from now on wins over this unlock
        until = await self.backend.unlock(code)
        if self.lock.epoch != epoch:
            self.backend.forget_session()
            raise Locked(OVERTAKEN)
        self.lock.unlocked(until)
        log.info("root.unlocked", until=rfc3339(until))
        self._wake.set()
        self.on_unlock()
        self.on_change()
        await self.identify()
        return until

    def lock_now(self) -> None:
        if not self.lock.enabled:
            raise BadRequest(
                "lock needs root.mfa_serial in config.toml (unlock asks for its code); "
                "to stop serving credentials without MFA, stop the agent"
            )
        self.lock.lock()
        self.backend.forget_session()
        log.warning("root.locked", by="dyncreds lock")
        self.on_change()

    def refuse_if_locked(self) -> None:
        """`dyncreds lock` refuses every credential request, warm or not."""
        if self.lock.refusing:
            raise Locked(self.lock.why(self.wall()))

    # ------------------------------------------------------------------ rotation

    async def rotate(self) -> str:
        async with self._rotating:
            try:
                key = await self.backend.rotate_root()
            finally:
                self.after_rotation()
        self.counters["root_rotations"] += 1
        self.rotation_error = None
        self._wake.set()  # the new key's CreateDate is the schedule's new origin
        await self.identify()
        return key

    async def run_schedule(self) -> None:
        """Rotate the root key every ``rotate_every``, counted from its CreateDate."""
        failures = 0
        while True:
            self._wake = trio.Event()
            delay = await self._schedule_step(failures)
            failures = failures + 1 if self.rotation_error else 0
            with trio.move_on_after(delay):
                await self._wake.wait()

    async def _schedule_step(self, failures: int) -> float:
        """One look at the schedule (rotating if due); how long to wait after it."""
        every = float(self.settings.rotate_every)
        if not every:
            self.next_rotation = None
            return RECHECK
        if self.lock.locked(self.wall()):
            return RECHECK  # the unlock wakes us
        attempted = False
        try:
            due = await self.backend.root_key_created() + every
            self.next_rotation = due
            if self.wall() < due:
                self.rotation_error = None
                return min(due - self.wall(), RECHECK)
            log.info("root.rotate_scheduled", due=rfc3339(due))
            attempted = True
            key = await self.rotate()
            self.audit("rotate_root", "ok", access_key_id=key, trigger="schedule")
            return 0.0  # read the new key's date
        except DyncredsError as exc:
            if attempted:
                self.audit("rotate_root", exc.code, trigger="schedule")
            self.rotation_error = exc.message
            delay = leases.backoff(failures + 1, self.rng(), base=60.0, cap=RETRY_CAP)
            log.error("root.rotate_failed", error=exc.message, retry_in=round(delay))
            return delay

    # ------------------------------------------------------------------ view

    def locked_line(self) -> str | None:
        """How systemd's STATUS= line starts while locked (None: unlocked)."""
        if not self.lock.locked(self.wall()):
            return None
        return (
            "locked by `dyncreds lock`" if self.lock.refusing else "locked (run `dyncreds unlock`)"
        )

    def view(self, source: str, warning: str | None) -> dict[str, Any]:
        now = self.wall()
        return {
            "arn": self.arn,
            "error": self.backend.root_problem or self.error,
            "region": self.settings.region,
            "source": source,
            "store": source,
            "warning": warning,
            **self.lock.view(now),
            "rotate_every": int(self.settings.rotate_every) or None,
            "next_rotation": rfc3339(self.next_rotation) if self.next_rotation else None,
            "rotation_error": self.rotation_error,
        }
