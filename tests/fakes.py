"""Hand-written fakes for the edges (as trio's own tests use a MemoryListener):
a fake AWS backend that mints leases in memory, and a wall clock tied to trio's
(mock) clock that a test can also jump forward, as a laptop's does after sleep.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from dyncreds.access import Asker
from dyncreds.agent import Agent
from dyncreds.aws.iam_user import TaggedUser
from dyncreds.config import Config, Role
from dyncreds.journal import Journal, Record
from dyncreds.keeper import LateRootGate
from dyncreds.leases import Lease, Secret, Window
from dyncreds.protocol import Upstream


class WallClock:
    """Wall time = a base + trio's clock + any jumps the test makes."""

    def __init__(self, base: float = 1_800_000_000.0):
        self.base = base
        self.jumped = 0.0

    def __call__(self) -> float:
        return self.base + trio.current_time() + self.jumped

    def jump(self, seconds: float) -> None:
        """The machine slept: wall time moves, trio's monotonic clock does not."""
        self.jumped += seconds


@dataclass
class FakeBackend:
    """Issues leases in memory after ``latency`` (on trio's clock)."""

    latency: float = 0.5
    root_problem: str | None = None
    fail_with: Upstream | None = None
    issued: list[Lease] = field(default_factory=list)
    extended: list[tuple[str, float]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    sessions_denied: list[tuple[str, float]] = field(default_factory=list)
    # static users: the keys each user has now, and the most it ever had at once
    keys: dict[str, list[str]] = field(default_factory=dict)
    most_keys: int = 0
    deleted_keys: list[str] = field(default_factory=list)
    deleted_at: dict[str, float] = field(default_factory=dict)  # trio time
    on_issue: Callable[[Role], None] | None = None
    # The real iam_user code journals what it creates; so does the fake, so the
    # agent's reaper has the same rows to work from.
    journal: Journal | None = None
    # The root: the keeper's gate, asked before every call as the real session asks
    # it (unbound - no agent - nothing is refused), and its key's age.
    root_gate: LateRootGate = field(default_factory=LateRootGate)
    wall: Callable[[], float] | None = None
    key_created_at: float = 0.0
    rotated_at: list[float] = field(default_factory=list)  # wall times
    rotate_fails: int = 0  # the next this many rotations fail
    unlock_for: float = 3600.0
    tagged: list[TaggedUser] = field(default_factory=list)  # the orphan sweep finds these
    consumers: list[str | None] = field(default_factory=list)  # system mode: for whom

    def configure(self, config: Config) -> None:
        pass

    def _now(self) -> float:
        return self.wall() if self.wall else trio.current_time()

    async def unlock(self, code: str) -> float:
        await trio.sleep(self.latency)
        return self._now() + self.unlock_for

    def forget_session(self) -> None:
        pass  # the keeper locks; the fake holds no session keys

    def _may_act(self) -> None:
        if self.root_gate.keeper is not None:
            self.root_gate.may_act()

    async def root_key_created(self) -> float:
        await trio.sleep(self.latency / 5)
        self._may_act()
        return self.key_created_at

    def restore(self, role: Role) -> Lease | None:
        return None  # nothing sealed at rest: every start issues anew

    async def finish_root_rotation(self, user_name: str, old_key: str, since: float) -> bool:
        return False

    async def issue(
        self,
        role: Role,
        lease_id: str,
        window: Window,
        on_step: Callable[[str], None] = lambda step: None,
        consumer: str | None = None,
    ) -> Lease:
        """Mints in memory, with the times the agent decided (``leases.window``)."""
        self._may_act()
        await trio.sleep(self.latency)
        if self.fail_with is not None:
            raise self.fail_with
        self.consumers.append(consumer)
        if self.on_issue:
            self.on_issue(role)
        now = window.issued_at
        if role.credential_type == "static_user":
            return await self._static_key(role, lease_id, window)
        iam = role.credential_type == "iam_user"
        lease = Lease(
            id=lease_id,
            role=role.name,
            credential_type=role.credential_type,
            access_key_id="AKIA" + secrets.token_hex(8).upper(),
            secret_access_key=Secret(secrets.token_hex(20)),
            session_token=None if iam else Secret(secrets.token_hex(40)),
            issued_at=now,
            expires_at=window.expires_at,
            hard_expires_at=window.hard_expires_at,
            user_name=f"user-{lease_id}" if iam else None,
        )
        if iam and self.journal is not None:
            await self.journal.creating(
                lease_id, role.name, str(lease.user_name), now, lease.expires_at
            )
            await self.journal.activate(lease_id, lease.expires_at)
        self.issued.append(lease)
        return lease

    async def _static_key(self, role: Role, lease_id: str, window: Window) -> Lease:
        user = str(role.username)
        keys = self.keys.setdefault(user, [])
        if len(keys) >= 2:
            raise Upstream(f"IAM user {user} already has two access keys", "LimitExceeded")
        key = "AKIA" + secrets.token_hex(8).upper()
        now, expires_at = window.issued_at, window.expires_at
        if self.journal is not None:
            await self.journal.creating(
                lease_id, role.name, user, now, expires_at, thing="key", detail=json.dumps(keys)
            )
            await self.journal.key_created(lease_id, key)
            await self.journal.activate(lease_id, expires_at)
        keys.append(key)
        self.most_keys = max(self.most_keys, len(keys))
        lease = Lease(
            id=lease_id, role=role.name, credential_type="static_user", access_key_id=key,
            secret_access_key=Secret(secrets.token_hex(20)), session_token=None,
            issued_at=now, expires_at=expires_at, hard_expires_at=expires_at, user_name=user,
        )  # fmt: skip
        self.issued.append(lease)
        return lease

    async def revoke(self, record: Record) -> bool:
        """What the real backend hands to the record's credential type: a static
        user's key, or an IAM user."""
        if record.thing == "key":
            return await self.delete_key(record.user_name, record.access_key_id)
        return await self.delete_user(record.user_name)

    async def delete_key(self, user_name: str, access_key_id: str | None) -> bool:
        await trio.sleep(self.latency / 5)
        keys = self.keys.get(user_name, [])
        if access_key_id in keys:
            keys.remove(access_key_id)
            self.deleted_keys.append(access_key_id)
            self.deleted_at[access_key_id] = trio.current_time()
            return True
        return False

    async def extend(self, lease: Lease, expires_at: float) -> None:
        await trio.sleep(self.latency / 5)
        if self.fail_with is not None:
            raise self.fail_with
        self.extended.append((lease.id, expires_at))

    async def delete_user(self, user_name: str) -> bool:
        await trio.sleep(self.latency / 5)
        self._may_act()
        if self.fail_with is not None:
            raise self.fail_with
        self.deleted.append(user_name)
        return True

    async def identity(self) -> str:
        return "arn:aws:iam::123456789012:user/fake-root"

    async def rotate_root(self) -> str:
        await trio.sleep(self.latency)
        if self.rotate_fails:
            self.rotate_fails -= 1
            raise Upstream("AWS CreateAccessKey failed: Throttling", "Throttling")
        self.key_created_at = self._now()
        self.rotated_at.append(self.key_created_at)
        return "AKIAROTATED"

    async def revoke_sessions(self, role: Role, at: float) -> None:
        self.sessions_denied.append((role.name, at))

    async def tagged_users(self, agents: set[str] | None = None) -> list[TaggedUser]:
        wanted = agents or set()
        return [u for u in self.tagged if not wanted or u.agent in wanted]


class MemoryTokens:
    """A state dir's fleet start tokens, in memory (fleet.TokenStore)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.where = "the state directory"

    def load(self) -> list[str]:
        return list(self.tokens)

    def save(self, tokens: list[str]) -> None:
        self.tokens = list(tokens)


def lease_of(agent: Agent, role: str, asker: Asker | None = None) -> Lease | None:
    """The lease the agent holds now for ``role`` (system mode: ``asker``'s)."""
    worker = agent.workers.get(agent.key(role, asker))
    return worker.state.lease if worker is not None else None
