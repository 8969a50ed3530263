"""`revoke`: revoke leases now, and say per lease exactly what happened to it.

An iam_user or static_user lease is deleted in AWS by the reaper (and waited
for); STS credentials cannot be deleted, so the answer says until when they stay
valid - or, for roles with ``revoke_sessions``, an inline deny on the role (or on
the root user, for federation tokens) makes AWS refuse every session issued
before now, and the leases that deny killed are dropped in every role that
shares the target. The agent routes here with what a revocation needs (its
workers, journal, reaper, the backend's session deny and the time) and keeps the
status counters; this module owns the rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from dyncreds import logs, views
from dyncreds.config import Role
from dyncreds.journal import ROOT_KEY, Journal
from dyncreds.leases import Lease
from dyncreds.protocol import BadRequest, DyncredsError, Upstream, rfc3339
from dyncreds.reaper import Reaper
from dyncreds.worker import WorkerTable

log = logs.get("agent")


DenySessions = Callable[[Role, float], Awaitable[None]]  # backend.revoke_sessions


async def revoke(
    workers: WorkerTable,
    journal: Journal,
    reaper: Reaper,
    deny_sessions: DenySessions,
    now: float,
    *,
    lease_id: str | None = None,
    role: str | None = None,
    everything: bool = False,
    force: bool = False,
    owner: int | None = None,
) -> list[dict[str, str]]:
    """Revoke now; one result per lease saying exactly what happened to it:
    "deleted", "denied from T", or "valid until T: STS credentials cannot be
    deleted". ``owner`` (system mode, a non-admin): only that uid's own current
    leases - never a shared one, a retiring one or another role's sessions.
    ``role`` must be a configured one (the agent checks)."""
    # The protocol allows exactly one of lease_id, role and everything.
    chosen = workers.of_role(role) if role is not None else list(workers.values())
    if owner is not None:
        chosen = [w for w in chosen if w.key.uid == owner]
    current = {lease.id: lease for w in chosen if (lease := w.retire_now(lease_id))}
    targets = _targets(journal, current, lease_id, role, everything, owner)
    if lease_id is not None and not targets:
        raise BadRequest(f"no lease {lease_id[:80]!r} (see `dyncreds status`)")
    if force:
        for target in targets:
            await journal.forget(target)
        log.warning("lease.forgotten", leases=",".join(targets))
        return [{"lease_id": t, "outcome": "forgotten (still in AWS)"} for t in targets]
    # Read before the deny: retiring leases may change the journal.
    things = {r.lease_id: r.thing for r in journal.all() if r.lease_id in targets}
    denied = (
        set()
        if owner is not None
        else await _deny_sessions(workers, deny_sessions, current, role, everything, now)
    )
    results = await _revoke_targets(journal, reaper, targets, things, current, denied, now)
    return [{"lease_id": t, "outcome": results[t]} for t in sorted(results)]


def _targets(
    journal: Journal,
    current: dict[str, Lease],
    lease_id: str | None,
    role: str | None,
    everything: bool,
    owner: int | None,
) -> list[str]:
    """The current leases just taken from their workers, then every journalled lease
    the request also names (retiring ones, orphans) - never for a non-admin owner."""
    return list(current) + [
        r.lease_id
        for r in journal.all()
        if owner is None
        and r.lease_id not in current
        and r.thing != ROOT_KEY  # a root rotation cleans up after itself
        and (everything or r.lease_id == lease_id or (role and r.role == role))
    ]


async def _revoke_targets(
    journal: Journal,
    reaper: Reaper,
    targets: list[str],
    things: dict[str, str],
    current: dict[str, Lease],
    denied: set[str],
    now: float,
) -> dict[str, str]:
    """Revoke every target concurrently; each lease's outcome, or Upstream naming
    how many failed if any did (the rest are still revoked)."""
    failures: list[str] = []
    results: dict[str, str] = {}

    async def one(target: str) -> None:
        problem = await _revoke_one(journal, reaper, target, current.get(target))
        if problem:
            failures.append(problem)
        else:
            thing = things.get(target, "user")
            results[target] = views.revoke_outcome(current.get(target), denied, now, thing)

    async with trio.open_nursery() as nursery:
        for target in targets:
            nursery.start_soon(one, target)
    if failures:
        raise Upstream(
            f"{len(failures)} of {len(targets)} revocations failed: {failures[0]}",
            aws_code="RevokeFailed",
        )
    return results


async def _deny_sessions(
    workers: WorkerTable,
    deny_sessions: DenySessions,
    current: dict[str, Lease],
    role: str | None,
    everything: bool,
    now: float,
) -> set[str]:
    """For roles with ``revoke_sessions``: deny, in AWS, every session issued
    before now; then retire the leases that deny just killed, in every role
    that shares the target (their clients get fresh ones). The roles denied."""
    names = {lease.role for lease in current.values()}
    if role is not None:
        names.add(role)
    if everything:
        names |= set(workers.roles())
    roles = [
        ws[0].state.role
        for n in sorted(names)
        if (ws := workers.of_role(n)) and ws[0].state.role.revoke_sessions
    ]
    for target in roles:
        await deny_sessions(target, now)
        log.info("lease.sessions_denied", role=target.name, before=rfc3339(now))
    arns = {arn for r in roles if r.kind.sessions_scope == "role_arns" for arn in r.role_arns}
    whole = {r.credential_type for r in roles if r.kind.sessions_scope == "kind"}
    for worker in workers.values():
        lease, mine = worker.state.lease, worker.state.role
        hit = mine.credential_type in whole or bool(arns & set(mine.role_arns))
        if lease is not None and hit and lease.issued_at <= now:
            worker.retire_now()
    return {r.name for r in roles}


async def _revoke_one(
    journal: Journal, reaper: Reaper, target: str, lease: Lease | None
) -> str | None:
    """Revoke one lease now; None, or what went wrong."""
    if journal.get(target) is not None:
        try:
            await reaper.revoke_and_wait(target)
        except DyncredsError as exc:
            return exc.message
        return None
    if lease is not None and lease.user_name is not None:
        # Never claim a revocation that did not happen.
        return (
            f"lease {target} has no journal record, so its IAM user {lease.user_name} "
            "was not deleted; check `dyncreds status` and delete the user by hand if "
            "it still exists"
        )
    return None  # STS credentials: nothing in AWS to delete
