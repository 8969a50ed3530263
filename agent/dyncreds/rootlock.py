"""The root's MFA lock, as data (pure).

With ``[root] mfa_serial`` the long-lived root key signs one thing only,
GetSessionToken with an MFA code; everything else is signed by the session that
returns, for ``unlock_for``. The keeper (keeper.py) keeps the one ``RootLock``
and asks it, with the agent's clock, whenever a request or the AWS session asks
whether the root may act; ``status`` shows it. Two ways to be
locked, told apart because they differ for clients: no (or an ended) MFA
session still serves warm leases; ``dyncreds lock`` refuses every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dyncreds.protocol import rfc3339

# A session this close to its end counts as ended: a call signed with it could
# expire in flight (and a CreateUser half-done by an expired session helps no one).
MARGIN = 60.0


@dataclass
class RootLock:
    mfa_serial: str | None = None
    unlocked_until: float | None = None
    refusing: bool = False  # `dyncreds lock`: refuse every credential request
    # Counts `dyncreds lock`s: an unlock that was in flight when one came (it read
    # a smaller epoch when it started) does not unlock - lock is a fence.
    epoch: int = 0

    @property
    def enabled(self) -> bool:
        return self.mfa_serial is not None

    def locked(self, now: float) -> bool:
        """May the agent make an AWS call (other than GetSessionToken) now?"""
        if not self.enabled:
            return False
        return self.refusing or self.unlocked_until is None or now >= self.unlocked_until - MARGIN

    def unlocked(self, until: float) -> None:
        self.unlocked_until = until
        self.refusing = False

    def lock(self) -> None:
        self.unlocked_until = None
        self.refusing = True
        self.epoch += 1

    def ended(self) -> None:
        """AWS says the session expired: locked, but warm leases are still served."""
        self.unlocked_until = None

    def why(self, now: float) -> str:
        """The ``locked`` error's one line, with what to do."""
        if self.refusing:
            return "the agent was locked with `dyncreds lock`: run `dyncreds unlock` to use it"
        if self.unlocked_until is not None and now >= self.unlocked_until - MARGIN:
            return (
                f"the agent's MFA session ended at {rfc3339(self.unlocked_until)}: "
                "run `dyncreds unlock`"
            )
        return "the agent is locked (root.mfa_serial is set): run `dyncreds unlock`"

    def view(self, now: float) -> dict[str, Any]:
        return {
            "mfa": self.enabled,
            "locked": self.locked(now),
            "locked_by_user": self.refusing,
            "unlocked_until": (
                rfc3339(self.unlocked_until)
                if self.unlocked_until is not None and not self.locked(now)
                else None
            ),
        }
