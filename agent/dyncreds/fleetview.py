"""What `fleet status` shows of the whole fleet: every agent (alive as this
agent judges it - by its pulse, on this agent's monotonic clock), its clock's
skew against AWS's, unfinished takeovers, pending revocations, and the items
skipped as bad.

Pure: it reads the fleet's state and the table's items, and returns data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dyncreds.config import FleetSettings
from dyncreds.fleetclock import silent_too_long
from dyncreds.fleetitems import AgentItem, RecordMeta
from dyncreds.journal import Record
from dyncreds.protocol import rfc3339


def _agent_row(
    peer: AgentItem, me: bool, silent: float, dead_after: float, leases: int
) -> dict[str, Any]:
    return {
        "id": peer.agent_id,
        "host": peer.host,
        "pid": peer.pid,
        "alive": peer.taken_by is None and (me or not silent_too_long(silent, dead_after)),
        "last_heartbeat": rfc3339(peer.heartbeat),  # on its own clock
        "silent_for": round(silent),  # on this agent's monotonic clock
        "skew": peer.skew,
        "leases": leases,
        "taken_over_by": peer.taken_by,
        "takeover_unfinished": peer.taken_by is not None and not peer.finished,
        "records_taken_over": len(peer.adopted),
        "me": me,
    }


def fleet_status(
    settings: FleetSettings,
    me: str | None,
    roster: list[AgentItem],
    records: list[tuple[Record, RecordMeta]],
    *,
    silent_for: Callable[[str], float],
    bad: dict[str, str],
) -> dict[str, Any]:
    per_owner: dict[str, int] = {}
    for _, meta in records:
        per_owner[meta.owner] = per_owner.get(meta.owner, 0) + 1
    dead_after = float(settings.dead_after)
    agents = [
        _agent_row(
            peer,
            peer.agent_id == me,
            0.0 if peer.agent_id == me else silent_for(peer.agent_id),
            dead_after,
            per_owner.get(peer.agent_id, 0),
        )
        for peer in sorted(roster, key=lambda p: p.agent_id)
    ]
    pending = [
        {
            "lease_id": record.lease_id,
            "role": record.role,
            "user": record.user_name,
            "owner": meta.owner,
            "created_by": meta.origin,
            "state": record.state,
            "revoke_at": rfc3339(record.revoke_at),  # on its owner's clock
            "attempts": record.attempts,
            "last_error": record.last_error,
        }
        for record, meta in sorted(records, key=lambda r: r[0].revoke_at)
    ]
    return {
        "table": settings.table,
        "name": settings.name,
        "dead_after": int(dead_after),
        "agents": agents,
        "unfinished_takeovers": [a["id"] for a in agents if a["takeover_unfinished"]],
        "pending": pending,
        "bad_items": [{"item": k, "error": v} for k, v in sorted(bad.items())],
    }
