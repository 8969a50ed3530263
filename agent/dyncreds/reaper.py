"""Revocation at the announced expiry, and the orphan sweep.

The **reaper** revokes every journal record whose ``revoke_at`` has come: a
lease of a kind that creates something in AWS (an IAM user, a static user's key;
the kind whose ``journal_thing`` the record is deletes it) once replaced or
revoked, a half-created one found at start-up, an orphan, and the extra key of an
interrupted root rotation. A failed revocation is retried with backoff; after
``IRREVOCABLE_AFTER`` failures the record shows as irrevocable in ``status`` and
is retried every ``SLOW_RETRY``. Nothing is ever revoked before the expiry it
announced: that time is the record's ``revoke_at``.

The **orphan sweep** finds users tagged with this agent's id that the journal
does not know (it was lost or restored from an old copy) and hands them to the
reaper. Users of other agents are never touched - but in a fleet (``scope``)
those of the dead agents this one took over are its own, and a user whose
record someone still holds is not an orphan. One user that cannot be taken in
does not stop the sweep.

No exception ends the reaper: an unexpected one is an attempt that failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio

from dyncreds import leases, logs
from dyncreds.journal import ROOT_KEY, Journal, Record
from dyncreds.leases import IRREVOCABLE_AFTER
from dyncreds.protocol import DyncredsError, Locked, Upstream, rfc3339

if TYPE_CHECKING:  # the shells never import boto3
    from dyncreds.aws.iam_user import TaggedUser

log = logs.get("reaper")

MAX_SLEEP = 30.0  # re-read the wall clock at least this often
REVOKE_TIMEOUT = 120.0
SLOW_RETRY = 15 * 60.0  # how often an irrevocable lease is retried
SWEEP_FIRST_AFTER = 5.0  # let start-up recovery go first


class Deleter(Protocol):
    """What the reaper needs from AWS (aws/backend.py)."""

    async def revoke(self, record: Record) -> bool: ...
    async def tagged_users(self, agents: set[str] | None = None) -> list[TaggedUser]: ...
    async def finish_root_rotation(self, user_name: str, old_key: str, since: float) -> bool: ...


@dataclass
class Outcome:
    """What a ``revoke_and_wait`` caller learns."""

    event: trio.Event = field(default_factory=trio.Event)
    ok: bool = False


class SweepScope(Protocol):
    """Fleet: whose tags this agent sweeps, and whether a record tracks a user."""

    def agents(self) -> set[str]: ...
    async def tracked(self, agent: str, lease_id: str) -> bool: ...
    def revoke_at(self, agent: str, announced: float) -> float: ...


@dataclass
class SweepSettings:
    every: float = 3600.0
    min_age: float = 300.0


class Reaper:
    def __init__(
        self,
        journal: Journal,
        backend: Deleter,
        *,
        wall: Callable[[], float],
        rng: Callable[[], float],
        counters: Counter[str],
        sweep: SweepSettings,
        scope: SweepScope | None = None,
    ):
        """``scope``: in a fleet, the takeovers that widen whose users are swept."""
        self.journal = journal
        self.backend = backend
        self.wall = wall
        self.rng = rng
        self.counters = counters
        self.sweep = sweep
        self._poke = trio.Event()
        self._done: dict[str, Outcome] = {}
        self._unwritten: set[str] = set()  # retire requests the journal refused
        self._locked_out: set[str] = set()  # due, but waiting for `dyncreds unlock`
        self.scope = scope
        self._sweep_now = trio.Event()

    def poke(self) -> None:
        self._poke.set()

    def unlocked(self) -> None:
        """What waited for the unlock is due again now (not at its next look)."""
        self._unwritten |= self._locked_out
        self._locked_out.clear()
        self.poke()

    async def retire(self, lease_id: str) -> None:
        """Revoke this journaled lease as soon as possible (no wait for the result).
        If the journal cannot be written, the request is kept and retried: the
        record still says the announced expiry, so nothing is lost meanwhile."""
        try:
            await self.journal.revoke_now(lease_id, self.wall())
        except DyncredsError as exc:
            self._unwritten.add(lease_id)
            log.error("lease.retire_deferred", lease=lease_id, error=exc.message)
        self.poke()

    async def run(self) -> None:
        while True:
            for lease_id in list(self._unwritten):
                try:
                    await self.journal.revoke_now(lease_id, self.wall())
                except Exception:
                    break  # the journal still cannot be written: at the next wake-up
                self._unwritten.discard(lease_id)
            now = self.wall()
            due = self.journal.due(now)
            if due:
                async with trio.open_nursery() as nursery:
                    for record in due:
                        nursery.start_soon(self._revoke, record)
                continue
            next_due = self.journal.next_due()
            delay = MAX_SLEEP if next_due is None else min(max(next_due - now, 0.0), MAX_SLEEP)
            with trio.move_on_after(delay):
                await self._poke.wait()
            self._poke = trio.Event()

    async def _revoke(self, record: Record) -> None:
        """One attempt at one record. Whatever happens, anyone waiting is told, and
        a journal that cannot be written only delays the record (never a crash)."""
        try:
            await self.journal.revoking(record.lease_id)
            done = await self._delete(record)
        except Exception as exc:  # the journal itself failed (or a bug: never fatal)
            done = False
            log.error("lease.revoke_unjournaled", lease=record.lease_id, error=logs.said(exc))
            # Out of the due list until the disk recovers; retried with the rest.
            await trio.sleep(min(SLOW_RETRY, MAX_SLEEP))
        # Whoever asked while this attempt ran learns its outcome too.
        outcome = self._done.pop(record.lease_id, None)
        if outcome is not None:
            outcome.ok = done
            outcome.event.set()

    async def _delete(self, record: Record) -> bool:
        try:
            with trio.fail_after(REVOKE_TIMEOUT):
                existed = await self._remove(record)
        except Locked as exc:
            # Not an attempt: it waits, visibly, for `dyncreds unlock` (which pokes us).
            await self.journal.revoke_failed(
                record.lease_id, exc.message, self.wall() + MAX_SLEEP, count=False
            )
            self._locked_out.add(record.lease_id)
            return False
        except Exception as exc:  # trio.TooSlowError, AWS, or a bug: an attempt that failed
            message = "timed out" if isinstance(exc, trio.TooSlowError) else logs.said(exc)
            attempts = record.attempts + 1
            delay = (
                leases.backoff(attempts, self.rng(), cap=SLOW_RETRY)
                if attempts < IRREVOCABLE_AFTER
                else SLOW_RETRY
            )
            await self.journal.revoke_failed(record.lease_id, message, self.wall() + delay)
            self.counters["revoke_failures"] += 1
            log.warning(
                "lease.revoke_failed",
                lease=record.lease_id,
                user=record.user_name,
                attempts=attempts,
                retry_in=round(delay),
                error=message,
            )
            return False
        if record.settle_until > self.wall():
            # Deleted; but an abandoned CreateUser may still land: look again later.
            await self.journal.recheck(record.lease_id, record.settle_until)
            log.info(
                "lease.revoked_pending_recheck",
                lease=record.lease_id,
                user=record.user_name,
                existed=existed,
                recheck_at=rfc3339(record.settle_until),
            )
            return True
        await self.journal.forget(record.lease_id)
        self.counters["revoked"] += 1
        log.info("lease.revoked", lease=record.lease_id, user=record.user_name, existed=existed)
        return True

    async def _remove(self, record: Record) -> bool:
        """An IAM user and all it has; one access key of a static user - never a key
        the agent did not create (those listed before it, and the journal's); or the
        extra key of an interrupted root rotation (aws/root.py)."""
        if record.thing == ROOT_KEY:  # a root rotation that did not finish
            return await self.backend.finish_root_rotation(
                record.user_name, record.detail or "", record.created_at
            )
        # What else a record stands for, its credential type deletes (kinds.by_thing).
        return await self.backend.revoke(record)

    async def revoke_and_wait(self, lease_id: str) -> None:
        """Revoke now and wait for the outcome; Upstream if it did not succeed yet."""
        outcome = self._done.setdefault(lease_id, Outcome())
        # A journal error goes to the caller; no record left means already revoked.
        if not await self.journal.revoke_now(lease_id, self.wall()):
            self._done.pop(lease_id, None)
            return
        self.poke()
        with trio.move_on_after(REVOKE_TIMEOUT + 10):
            await outcome.event.wait()
        if not outcome.ok:
            record = self.journal.get(lease_id)
            reason = (record.last_error if record else None) or "pending"
            raise Upstream(
                f"lease {lease_id} could not be revoked yet (will retry): {reason}",
                aws_code="RevokeFailed",
            )

    # ------------------------------------------------------------------ orphans

    def sweep_soon(self) -> None:
        """Sweep now rather than at the next hour (a dead peer's tag just became ours)."""
        self._sweep_now.set()

    async def run_sweeps(self) -> None:
        await trio.sleep(SWEEP_FIRST_AFTER)
        while True:
            try:
                await self.sweep_orphans()
            except Exception as exc:
                log.warning("orphan.sweep_failed", error=logs.said(exc))
            with trio.move_on_after(self.sweep.every):
                await self._sweep_now.wait()
            self._sweep_now = trio.Event()

    async def sweep_orphans(self) -> list[str]:
        """Users carrying this agent's tag that the journal does not know are
        handed to the reaper once older than ``min_age`` (younger ones may be
        issuing right now), to be revoked at the expiry their ``dyncreds:expires``
        tag announced - a lost journal must not break that promise."""
        now = self.wall()
        known = self.journal.user_names()
        found = []
        agents = self.scope.agents() if self.scope is not None else None
        for user in await self.backend.tagged_users(agents):
            if user.name in known or now - user.created_at < self.sweep.min_age:
                continue
            try:
                if await self._take_in(user, now):
                    found.append(user.name)
            except DyncredsError as exc:  # e.g. its record exists, a peer's: not ours
                log.info("orphan.skipped", user=user.name, error=exc.message)
        if found:
            self.counters["orphans"] += len(found)
            self.poke()
        return found

    async def _take_in(self, user: TaggedUser, now: float) -> bool:
        lease_id = user.lease_id or f"orphan/{user.name}"
        owner = user.agent
        if self.scope is not None and await self.scope.tracked(owner, lease_id):
            return False  # a record still tracks it (a peer's, or one taken from us)
        if self.journal.get(lease_id) is not None:
            lease_id = f"orphan/{user.name}"
        # Revoked at the expiry it announced (its tag), never earlier.
        revoke_at = max(now, user.expires_at or now)
        if self.scope is not None:  # announced on its agent's clock: the same instant on ours
            revoke_at = self.scope.revoke_at(owner, revoke_at)
        await self.journal.creating(lease_id, user.role, user.name, user.created_at, revoke_at)
        await self.journal.activate(lease_id, revoke_at)
        log.warning("orphan.found", user=user.name, lease=lease_id, agent=owner)
        return True
