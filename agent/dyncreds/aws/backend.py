"""The facade the agent drives: issue, extend, revoke, identify, rotate.

What each credential type does is its module's (``aws/credtypes/``): the backend
hands the call to ``credtypes.ops(kind)`` and is itself the host those functions
use (the AWS session, the journal, names, propagation checks, the static store).
The agent never sees boto3; tests of its timing drive it with a hand-written
fake of this interface on trio's mock clock.
"""

from __future__ import annotations

import getpass
import secrets
import socket
import time
from collections.abc import Callable

from dyncreds import logs
from dyncreds.aws import iam_user, naming, root
from dyncreds.aws.attempts import BotoHook
from dyncreds.aws.credtypes import ops
from dyncreds.aws.iam_user import Propagation
from dyncreds.aws.mfa import RootGate
from dyncreds.aws.session import AwsSession
from dyncreds.aws.staticstore import StaticStore
from dyncreds.config import Config, Role
from dyncreds.journal import Journal, Record
from dyncreds.kinds import by_thing, kind
from dyncreds.leases import Lease, Window
from dyncreds.protocol import Internal

OnStep = Callable[[str], None]
log = logs.get("aws")


class AwsBackend:
    def __init__(
        self,
        config: Config,
        journal: Journal,
        agent_id: str,
        event_hooks: list[tuple[str, BotoHook]] | None = None,
        static_store: StaticStore | None = None,
        root_gate: RootGate | None = None,
    ):
        """``root_gate``: the agent keeper's answer to "may the root act now", asked by
        the AWS session before every call (none: the root never unlocks)."""
        self.journal = journal
        self.root_gate = root_gate
        self.agent_id = agent_id
        self.event_hooks = event_hooks
        self.local_user = getpass.getuser()
        self.host = socket.gethostname().split(".")[0]
        # Static roles' current keys at rest (aws/staticstore.py); given by the daemon.
        self.static_store = static_store
        self.configure(config)

    def configure(self, config: Config) -> None:
        """(Re)build from configuration; raises Unavailable if the root is unusable."""
        agent = config.main.agent
        self.config = config
        self.propagation = Propagation(
            checks=agent.propagation_checks, timeout=float(agent.propagation_timeout)
        )
        self.create_grace = float(agent.create_grace)
        self.aws = AwsSession(
            config,
            call_timeout=float(agent.aws_call_timeout),
            concurrency=agent.aws_concurrency,
            event_hooks=self.event_hooks,
            previous=getattr(self, "aws", None),
            root_gate=self.root_gate,
        )

    def name(self, role: Role, limit: int, user: str, template: str | None = None) -> str:
        """A name AWS sees (user, session, source identity), from the role's template
        or [root] username_template, within AWS's ``limit``."""
        return naming.render(
            template or self.config.main.root.username_template,
            user=user,
            role=role.name,
            host=self.host,
            unix_time=int(time.time()),
            limit=limit,
        )

    def tag_value(self, template: str, role: Role, user: str) -> str:
        """Session tag values name the person too: ``{user}``, ``{role}``, ``{host}``."""
        values = {
            "user": user,
            "role": role.name,
            "host": self.host,
            "unix_time": int(time.time()),
            "random": secrets.token_hex(4),
        }
        return template.format_map(values)[:256]

    async def issue(
        self,
        role: Role,
        lease_id: str,
        window: Window,
        on_step: OnStep = lambda step: None,
        consumer: str | None = None,
    ) -> Lease:
        """``consumer``: system mode, the user the lease is for - ``{user}`` in every
        name AWS sees (CloudTrail says who); else the agent's own user."""
        # Before anything is journaled: a locked agent leaves no record behind.
        self.aws.require_unlocked()
        user = consumer or self.local_user
        return await ops(role.kind).issue(self, role, lease_id, window, on_step, user)

    async def extend(self, lease: Lease, expires_at: float) -> None:
        extend = ops(kind(lease.credential_type)).extend
        if extend is not None:
            await extend(self, lease, expires_at)

    def restore(self, role: Role) -> Lease | None:
        """At start-up: the lease its kind kept at rest, if any (blocking)."""
        restore = ops(role.kind).restore
        return None if restore is None else restore(self, role)

    async def revoke(self, record: Record) -> bool:
        """Delete what a journal record says was created, by the kind that wrote it;
        False if it was already gone."""
        owner = by_thing(record.thing)
        revoke = None if owner is None else ops(owner).revoke
        if revoke is None:
            raise Internal(
                f"lease {record.lease_id}: no credential type revokes a journaled "
                f"{record.thing!r}; delete {record.user_name} by hand"
            )
        return await revoke(self, record)

    async def revoke_sessions(self, role: Role, at: float) -> None:
        """Deny every session of this role issued before ``at`` (aws/session_revocation.py)."""
        deny = ops(role.kind).revoke_sessions
        if deny is not None:
            await deny(self, role, at)

    async def unlock(self, code: str) -> float:
        return await self.aws.unlock(code)

    def forget_session(self) -> None:
        self.aws.forget_session()

    @property
    def root_problem(self) -> str | None:
        """Why AWS currently refuses the root, if it does."""
        return self.aws.root_problem

    async def identity(self) -> str:
        result = await self.aws.call("sts", "get_caller_identity")
        return str(result["Arn"])

    async def rotate_root(self) -> str:
        return await root.rotate(self.aws, self.propagation, self.journal, self.create_grace)

    async def root_key_created(self) -> float:
        return await root.key_created(self.aws)

    async def finish_root_rotation(self, user_name: str, old_key: str, since: float) -> bool:
        return await root.finish_interrupted(self.aws, user_name, old_key, since)

    async def tagged_users(self, agents: set[str] | None = None) -> list[iam_user.TaggedUser]:
        return await iam_user.list_tagged_users(self.aws, agents or {self.agent_id})
