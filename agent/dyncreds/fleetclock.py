"""The fleet's rules about time, as pure functions and small state.

No two hosts' wall clocks are ever compared:

- **Liveness** is judged as the DynamoDB Lock Client judges a lock: a peer is
  dead when its heartbeat *pulse* (start token, counter) has not changed for
  ``dead_after`` on the observer's own monotonic clock. An observer that has just
  started has seen nothing change yet, so it waits a full ``dead_after`` before
  declaring anyone dead.
- **Skew**: each agent measures its own clock against AWS's (the ``Date`` of the
  table's answers, whole seconds) and publishes it. An agent further off than
  ``SKEW_LIMIT`` does not join the fleet.
- **Adopted expiries**: a record's ``revoke_at`` is in its owner's clock. A peer
  that adopts it moves it into its own clock (plus a margin for the ``Date``
  header's resolution), and never earlier than the announced value - so a
  lease is not deleted before the expiry its clients were told, whichever
  clock runs ahead.

Pure: no I/O (import-linter); time is an argument.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

SKEW_LIMIT = 60.0  # seconds; an agent further off than this does not join
SKEW_MARGIN = 2.0  # the Date header's whole seconds, twice (two agents' samples)
UNKNOWN_SKEW = SKEW_LIMIT  # a peer that never said: assume the worst it could be


@dataclass
class SkewMeter:
    """This agent's clock minus AWS's, from recent answers (median of a few)."""

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=7))

    def sample(self, local: float, aws_date: float) -> None:
        # Date is truncated to the second: AWS's time was in [date, date + 1).
        self.samples.append(local - (aws_date + 0.5))

    @property
    def value(self) -> float | None:
        return round(statistics.median(self.samples), 1) if self.samples else None


def too_skewed(skew: float | None) -> str | None:
    """Why this agent must not join, or None."""
    if skew is None or abs(skew) <= SKEW_LIMIT:
        return None
    side = "ahead of" if skew > 0 else "behind"
    return (
        f"this host's clock is {abs(skew):.0f}s {side} AWS's (more than {SKEW_LIMIT:.0f}s): "
        "the agent does not join the fleet until it is fixed (check NTP/chrony)"
    )


def adopted_revoke_at(revoke_at: float, owner_skew: float | None, my_skew: float | None) -> float:
    """The same instant in the adopter's clock, never before the announced value.

    ``owner_skew`` is the old owner's clock minus AWS's: its clients were told
    ``revoke_at`` on that clock. On ours the same instant is ``revoke_at -
    owner_skew + my_skew``; unknown skews count as the worst a member may have.
    """
    owner = -UNKNOWN_SKEW if owner_skew is None else owner_skew  # as far behind as allowed
    mine = 0.0 if my_skew is None else my_skew
    return revoke_at + max(0.0, mine - owner + SKEW_MARGIN)


@dataclass
class Observer:
    """When each peer's pulse last changed, on this agent's monotonic clock."""

    seen: dict[str, tuple[tuple[str, int, float], float]] = field(default_factory=dict)

    def observe(self, agent_id: str, pulse: tuple[str, int, float], mono: float) -> None:
        last = self.seen.get(agent_id)
        if last is None or last[0] != pulse:
            self.seen[agent_id] = (pulse, mono)

    def silent_for(self, agent_id: str, mono: float) -> float:
        """How long its pulse has not changed, as far as this agent knows (a lower
        bound: it changed no later than when this agent first saw it)."""
        last = self.seen.get(agent_id)
        return 0.0 if last is None else max(0.0, mono - last[1])

    def dead(self, agent_id: str, mono: float, dead_after: float) -> bool:
        return agent_id in self.seen and silent_too_long(
            self.silent_for(agent_id, mono), dead_after
        )

    def forget_others(self, present: set[str]) -> None:
        for gone in set(self.seen) - present:
            del self.seen[gone]


def silent_too_long(silent: float, dead_after: float) -> bool:
    """The liveness rule, for takeovers and for `fleet status` alike."""
    return silent >= dead_after
