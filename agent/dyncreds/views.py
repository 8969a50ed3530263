"""What ``status``, ``roles`` and systemd's STATUS= show: pure functions of the
state. No secrets: access key ids are shown, secret keys and tokens never.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dyncreds import broker
from dyncreds.broker import RoleState
from dyncreds.config import Role, RootSettings
from dyncreds.journal import Record
from dyncreds.kinds import KINDS, by_thing
from dyncreds.leases import IRREVOCABLE_AFTER, Lease, LeaseKey, Timing
from dyncreds.protocol import rfc3339


def role_view(state: RoleState, step: str | None, now: float, timing: Timing) -> dict[str, Any]:
    """One role's line; ``step`` is what the work in flight is doing, if any."""
    lease = state.lease
    return {
        "name": state.role.name,
        "type": state.role.credential_type,
        "state": state.phase.value,
        "lease_id": lease.id if lease else None,
        "access_key_id": lease.access_key_id if lease else None,
        "user_name": lease.user_name if lease else None,
        "issued_at": rfc3339(lease.issued_at) if lease else None,
        "expires_at": rfc3339(lease.expires_at) if lease else None,
        "remaining": max(0, int(lease.expires_at - now)) if lease else None,
        "next_action": broker.describe_next(state, now, timing) + (f" ({step})" if step else ""),
        "last_used": rfc3339(state.last_used) if state.last_used else None,
        "last_error": state.last_error,
        "counters": dict(state.counters),
    }


def lease_rows(
    roles: Mapping[str, Role],
    workers: Mapping[LeaseKey, tuple[RoleState, str | None, str | None]],
    now: float,
    timing: Timing,
    *,
    system: bool = False,
    only: list[str] | None = None,
    owner: int | None = None,
) -> list[dict[str, Any]]:
    """``status``'s roles: one line per lease key, each worker as (state, step,
    consumer). System mode: each line names its consumer, a role nobody uses yet
    has a line of its own, and a non-admin (``only`` = the roles it may see,
    ``owner`` = its uid) sees its own leases and shared ones, nobody else's."""
    rows: list[dict[str, Any]] = []
    for key, (state, step, consumer) in sorted(
        workers.items(), key=lambda item: (item[0].role, -1 if item[0].uid is None else item[0].uid)
    ):
        if only is not None and (key.role not in only or key.uid not in (None, owner)):
            continue
        rows.append(role_view(state, step, now, timing))
        if system:
            rows[-1]["consumer"] = consumer
    if system:
        shown = {row["name"] for row in rows}
        for name, role in roles.items():
            if name not in shown and (only is None or name in only):
                rows.append(
                    {**role_view(RoleState(role=role), None, now, timing), "consumer": None}
                )
        rows.sort(key=lambda row: str(row["name"]))
    return rows


def retiring_view(records: Iterable[Record], current: set[str]) -> list[dict[str, Any]]:
    """Journaled leases that are no longer current: waiting for their revocation."""
    return [
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
        for r in records
        if r.lease_id not in current
    ]


def roles_view(states: Iterable[RoleState]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.role.name,
            "type": s.role.credential_type,
            "ttl": s.role.ttl,
            "max_ttl": s.role.max_ttl,
            "region": s.role.region,
            "prefetch": s.role.prefetch,
        }
        for s in sorted(states, key=lambda s: s.role.name)
    ]


def root_source(root: RootSettings) -> str:
    if root.credentials_file:
        return "credentials_file"
    if root.systemd_credential:
        return "systemd_credential"
    if root.keyring:
        return "keyring"
    return "profile" if root.profile else "default chain"


def root_warning(root: RootSettings) -> str | None:
    """An administrator key in a plain file is what dyncreds exists to avoid."""
    if root.credentials_file:
        return (
            f"the root key is in a plain file ({root.credentials_file}): "
            "`dyncreds configure root --store keyring` moves it to the OS keyring"
        )
    return None


def summary(states: Mapping[str, RoleState], journaled: int) -> str:
    """One line for systemd's STATUS=."""
    ready = sum(1 for s in states.values() if s.lease is not None)
    errors = [s for s in states.values() if s.last_error]
    text = f"{len(states)} roles, {ready} leases, {journaled} users tracked"
    if errors:
        text += f"; last error ({errors[0].role.name}): {errors[0].last_error}"[:200]
    return text


def revoke_outcome(lease: Lease | None, denied: set[str], now: float, thing: str = "user") -> str:
    """What a revocation did to one lease, in the words ``revoke`` answers. A lease
    no longer current (a retired one, known from its journal record) is answered
    in the words of the kind whose record ``thing`` it is ("deleted": an IAM user
    with all it has; "key deleted": a static user's key)."""
    if lease is None:
        owner = by_thing(thing)
        return "deleted" if owner is None else owner.on_revoke
    if lease.user_name is not None:
        return KINDS[lease.credential_type].on_revoke
    if lease.role in denied:
        return f"denied from {rfc3339(now)}"
    return (
        f"valid until {rfc3339(lease.expires_at)}: STS credentials cannot be deleted "
        "(set revoke_sessions = true to deny them)"
    )
