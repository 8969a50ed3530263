"""The journal: what this agent has created in AWS, so that nothing outlives its
announced expiry, even if the agent is killed mid-way.

A record is written *before* the AWS call that creates the thing it describes
(Vault's WAL rollback idea), updated as each step completes, and forgotten once
the thing is gone from AWS. No secrets are ever written: a record holds names,
ids and times.

A record's ``revoke_at`` is the single source of truth for when its user is
revoked: the announced expiry for a served lease, "now" for a half-created one
or an explicit revoke. The reaper (reaper.py) revokes every record that is due.

States:
  creating  - CreateUser may have happened; keys may exist; nothing was served.
  active    - served to clients; revoked at revoke_at.
  revoking  - a revocation has started (and may have to be retried).

Writes are ``async`` and durable when they return; reads are instant, from
memory, so that ``status`` and the reaper never wait for the disk. What each
write changes, and what it does when its record is missing, is decided once, in
``rules.py``; a store only puts, updates, deletes and loads: ``sqlite.py`` the
embedded one, ``dynamodb.py`` the fleet's (one table shared by many agents, each
owning its records). ``stores.py`` opens the one the configuration asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from dyncreds.protocol import Unavailable

RecordState = Literal["creating", "active", "revoking"]


@dataclass(frozen=True)
class Record:
    lease_id: str
    role: str
    user_name: str
    access_key_id: str | None
    state: RecordState
    created_at: float
    revoke_at: float
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None
    # A CreateUser abandoned before this may still land: after deleting the user,
    # delete once more at this time before forgetting the record (0: no).
    settle_until: float = 0.0
    # What the record stands for, named by the kind that wrote it (``Kind.journal_thing``):
    # "user" (an IAM user and all it has) or "key" (a static_user's access key;
    # ``detail`` lists the user's keys before it); or "root_key" (a root rotation's
    # new key, aws/root.py).
    thing: str = "user"
    detail: str | None = None


# A root rotation's record (aws/root.py writes it; the reaper finishes one that was
# interrupted; revoke, status and takeovers leave it alone): not a credential type's.
ROOT_KEY = "root_key"


class LostRecord(Unavailable):
    """A write that must touch a record found none: someone else removed it.
    Never a silent success - the caller must not serve what it cannot track."""


class TakenOver(LostRecord):
    """Fleet: a peer declared this agent dead while it was cut off from the table,
    and took the record over (the conditional write on its owner failed)."""


class RecordGone(LostRecord):
    """Fleet: the record is not in the table at all (deleted by hand, or the table
    was re-created) - not the same thing as a peer taking it over."""


class JournalUnavailable(Unavailable):
    """The journal cannot be written (full disk, broken file): no new iam_user
    lease is issued until it can, and the agent keeps running."""


class Journal(Protocol):
    # ------------------------------------------------------------ writes (durable on return)
    async def creating(
        self,
        lease_id: str,
        role: str,
        user_name: str,
        now: float,
        revoke_at: float,
        *,
        thing: str = "user",
        detail: str | None = None,
    ) -> None:
        """Before CreateUser. ``revoke_at`` is the planned expiry; recovery treats a
        record still in 'creating' as due at once."""

    async def key_created(self, lease_id: str, access_key_id: str) -> None: ...

    async def activate(self, lease_id: str, revoke_at: float) -> None:
        """The lease is about to be served: from now on its expiry is a promise."""

    async def extend(self, lease_id: str, revoke_at: float) -> None: ...

    async def revoke_now(self, lease_id: str, now: float) -> bool: ...

    async def abandon(self, lease_id: str, now: float, settle_until: float) -> None:
        """An issuance failed: revoke now, and again at ``settle_until``."""

    async def recheck(self, lease_id: str, at: float) -> None:
        """Deleted, but a late CreateUser may still land: delete again at ``at``."""

    async def revoking(self, lease_id: str) -> None: ...

    async def revoke_failed(
        self, lease_id: str, error: str, next_attempt: float, *, count: bool = True
    ) -> None:
        """An attempt failed; ``count=False`` when it could not be made at all (the
        agent is locked), so waiting for an unlock never makes a lease irrevocable."""

    async def forget(self, lease_id: str) -> bool:
        """The user is gone from AWS (or the operator said to forget it)."""

    async def recover(self, now: float) -> int:
        """At start-up: half-created users are cleaned up at once. Returns how many."""

    async def close(self) -> None: ...

    def close_now(self) -> None:
        """At exit, outside trio (every write is already durable)."""

    # ------------------------------------------------------------ reads (memory)
    def get(self, lease_id: str) -> Record | None: ...

    def all(self) -> list[Record]: ...

    def due(self, now: float, limit: int = 100) -> list[Record]: ...

    def next_due(self) -> float | None: ...

    def user_names(self) -> set[str]: ...

    def count(self) -> int: ...


class MemoryRows:
    """The reads every journal answers from memory, never waiting for storage: the
    shared half of sqlite.py and dynamodb.py."""

    def __init__(self) -> None:
        self._rows: dict[str, Record] = {}

    def get(self, lease_id: str) -> Record | None:
        return self._rows.get(lease_id)

    def all(self) -> list[Record]:
        return sorted(self._rows.values(), key=lambda r: r.revoke_at)

    def due(self, now: float, limit: int = 100) -> list[Record]:
        due = [r for r in self._rows.values() if r.revoke_at <= now and r.next_attempt <= now]
        due.sort(key=lambda r: r.revoke_at)
        return due[:limit]

    def next_due(self) -> float | None:
        return min((max(r.revoke_at, r.next_attempt) for r in self._rows.values()), default=None)

    def user_names(self) -> set[str]:
        return {r.user_name for r in self._rows.values()}

    def count(self) -> int:
        return len(self._rows)
