"""Leases and the timing rules: when a lease may be served, extended, replaced or
revoked. Pure: every function takes ``now`` (wall-clock seconds) and, where it
randomises, the random draw, so tests drive it without clocks.

The numbers follow botocore's refresh windows (credentials.py): botocore asks for
new credentials when fewer than 15 minutes remain (advisory) and insists at 10.
A credential served with at least ``min_remaining`` (20 min by default) left is
therefore never refreshed by an SDK before dyncreds would have replaced it, so
SDKs do not re-run the shim in a loop.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, NamedTuple

import msgspec

from dyncreds.kinds import KINDS, CredentialType
from dyncreds.protocol import rfc3339

if TYPE_CHECKING:
    from dyncreds.config.schema import Role

# Never refresh later than this before the deadline: leaves room for an issuance
# that waits for IAM key propagation.
REFRESH_LEAD_MAX = 5 * 60
# A lease must stay servable at least this long after it is issued, whatever
# the role's TTL: shorter leases would be replaced as soon as they are served.
MIN_SERVE_WINDOW = 60
# Failed revocations before a lease is shown as irrevocable (and retried slowly).
IRREVOCABLE_AFTER = 6


class Secret:
    """A string that does not show itself: ``repr``, ``str`` and f-strings print
    stars, so a secret that ends up in a log line, an exception or a traceback's
    locals stays secret. ``reveal()`` is called only where the secret must leave as
    itself: a credentials body, a boto3 client, the root's key file, the static store's
    seal."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> tuple[type, tuple[str]]:
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True, slots=True)
class Lease:
    """One set of credentials for one role.

    ``expires_at`` is what clients are told: AWS's expiration for STS types, and
    for iam_user the moment the agent will revoke the user. ``hard_expires_at``
    is as far as it can ever move: AWS's expiration, or creation + max_ttl.
    """

    id: str
    role: str
    credential_type: CredentialType
    access_key_id: str
    secret_access_key: Secret
    session_token: Secret | None
    issued_at: float
    expires_at: float
    hard_expires_at: float
    user_name: str | None = None
    arn: str | None = None

    def remaining(self, now: float) -> float:
        return self.expires_at - now

    def credential_process(self) -> dict[str, object]:
        body: dict[str, object] = {
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key.reveal(),
        }
        if self.session_token is not None:
            body["SessionToken"] = self.session_token.reveal()
        body["Expiration"] = rfc3339(self.expires_at)
        return body

    def credential_process_line(self) -> bytes:
        # "Version" first (dicts keep their order): the shim recognises success
        # by the first bytes, b'{"Version"', without decoding.
        return msgspec.json.encode(self.credential_process()) + b"\n"

    def summary(self) -> dict[str, object]:
        """What ``credentials`` and ``renew`` answer about the lease. No secrets."""
        return {"id": self.id, "role": self.role, "expires_at": rfc3339(self.expires_at)}


class LeaseKey(NamedTuple):
    """Whose lease: one per role in user mode (``uid`` None); one per (role,
    consumer uid) in system mode, so consumers never share keys. The agent's
    worker table is keyed by it."""

    role: str
    uid: int | None = None


def new_lease_id(role: str) -> str:
    return f"{role}/{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Timing:
    """The agent-wide knobs, from config.toml's [agent]."""

    min_remaining: float = 20 * 60
    idle_after: float = 3600


@dataclass(frozen=True, slots=True)
class Window:
    """A new lease's times, decided before it is issued: the issuers under aws/ are
    handed one and compute no time of their own.

    ``expires_at`` is the lease's *expiry* (ARCHITECTURE.md, "Words"): what clients
    are told, and for a kind that creates something in AWS also its journal
    record's revoke time and its ``dyncreds:expires`` tag. ``hard_expires_at`` is as
    far as extension may ever move it. An STS kind asks AWS for ``duration`` and
    serves AWS's own Expiration instead, which can only be earlier.
    """

    issued_at: float
    expires_at: float
    hard_expires_at: float

    @property
    def duration(self) -> int:
        """Seconds from issue to expiry: what an STS call asks for."""
        return round(self.expires_at - self.issued_at)


def window(role: Role, now: float, timing: Timing) -> Window:
    """The times of a lease of ``role`` issued at ``now``: expiry one ttl away (plus
    ``min_remaining`` for a kind whose leases overlap their successors, so SDKs move
    to a rotated key before the old one is deleted); extendable up to max_ttl."""
    kind = role.kind
    expires_at = now + role.ttl + (timing.min_remaining if kind.overlap else 0.0)
    hard_expires_at = now + role.max_ttl if kind.extendable else expires_at
    return Window(issued_at=now, expires_at=expires_at, hard_expires_at=hard_expires_at)


def lifetime(lease: Lease) -> float:
    return max(lease.expires_at - lease.issued_at, 0.0)


def required_remaining(lease: Lease, timing: Timing, role_ttl: float) -> float:
    """How long a lease must still live to be served.

    ``min_remaining``, unless the role's own TTL is shorter: a lease cannot
    promise more than it was issued with, so then it is half the TTL (and at
    least a minute, so a lease is not replaced the moment it is served).
    """
    span = min(role_ttl, lifetime(lease) or role_ttl)
    if span >= 2 * timing.min_remaining:
        return timing.min_remaining
    return max(min(timing.min_remaining, span / 2), min(MIN_SERVE_WINDOW, span / 4))


def servable(lease: Lease | None, now: float, timing: Timing, role_ttl: float) -> bool:
    """May this lease be handed out now? Judged by the wall clock at each request,
    so a laptop that slept through its timers is never handed expired keys."""
    if lease is None:
        return False
    return lease.remaining(now) >= required_remaining(lease, timing, role_ttl)


def refresh_at(lease: Lease, timing: Timing, role_ttl: float, jitter: float) -> float:
    """When the background refresher should extend or replace this lease: before it
    stops being servable, with a lead for the issuance itself and jitter (``jitter``
    in [0, 1)) so that many roles issued together do not refresh together."""
    deadline = lease.expires_at - required_remaining(lease, timing, role_ttl)
    lead = min(REFRESH_LEAD_MAX, lifetime(lease) / 10)
    return max(lease.issued_at, deadline - lead * (1.0 + jitter))


RefreshKind = Literal["extend", "replace"]


def refresh_kind(lease: Lease, now: float, timing: Timing, role_ttl: float) -> RefreshKind:
    """Extendable kinds (iam_user) are extended (same keys) until their max_ttl;
    then, and for every other kind, a new lease replaces the old one."""
    if not KINDS[lease.credential_type].extendable:
        return "replace"
    extended = extended_expiry(lease, now, role_ttl)
    window = required_remaining(lease, timing, role_ttl)
    # Worth it only if the extended lease stays servable for a while.
    if extended - now >= window + max(MIN_SERVE_WINDOW, role_ttl / 4):
        return "extend"
    return "replace"


def extended_expiry(lease: Lease, now: float, role_ttl: float) -> float:
    """Extension moves the announced expiry to now + ttl, never past max_ttl."""
    return max(lease.expires_at, min(now + role_ttl, lease.hard_expires_at))


def extend(lease: Lease, expires_at: float) -> Lease:
    return replace(lease, expires_at=expires_at)


def is_active(last_used: float | None, prefetch: bool, now: float, timing: Timing) -> bool:
    """A role is kept warm while somebody asked for it within idle_after, or always
    with prefetch."""
    if prefetch:
        return True
    return last_used is not None and now - last_used < timing.idle_after


def backoff(failures: int, jitter: float, base: float = 2.0, cap: float = 300.0) -> float:
    """Full-jitter-ish exponential backoff: the n-th retry waits up to base*2**n."""
    ceiling = min(cap, base * 2.0 ** max(failures - 1, 0))
    return ceiling * (0.5 + jitter / 2)
