"""The facade the agent drives: issue, extend, delete, identify, rotate.

Which function mints which credential type is the ``issuer`` column of
``kinds.KINDS``, mapped here to the issuer itself. The agent never sees boto3;
tests of its timing drive it with a hand-written fake of this interface on
trio's mock clock.
"""

from __future__ import annotations

import getpass
import secrets
import socket
import time
from collections.abc import Awaitable, Callable

import trio

from dyncreds import logs
from dyncreds.aws import iam_user, naming, root, session_revocation, static_user, sts
from dyncreds.aws.attempts import BotoHook
from dyncreds.aws.iam_user import Propagation
from dyncreds.aws.mfa import RootGate
from dyncreds.aws.session import AwsSession
from dyncreds.aws.staticstore import StaticStore
from dyncreds.config import Config, Role
from dyncreds.journal import Journal
from dyncreds.leases import Lease

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

    def _name(self, role: Role, limit: int, user: str, template: str | None = None) -> str:
        return naming.render(
            template or self.config.main.root.username_template,
            user=user,
            role=role.name,
            host=self.host,
            unix_time=int(time.time()),
            limit=limit,
        )

    def _tag_value(self, template: str, role: Role, user: str) -> str:
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
        now: float,
        on_step: OnStep = lambda step: None,
        consumer: str | None = None,
    ) -> Lease:
        """``consumer``: system mode, the user the lease is for - ``{user}`` in every
        name AWS sees (CloudTrail says who); else the agent's own user."""
        # Before anything is journaled: a locked agent leaves no record behind.
        self.aws.require_unlocked()
        user = consumer or self.local_user
        return await ISSUERS[role.kind.issuer](self, role, lease_id, now, on_step, user)

    async def _iam_user(
        self, role: Role, lease_id: str, now: float, on_step: OnStep, user: str
    ) -> Lease:
        return await iam_user.create(
            self.aws,
            self.journal,
            role=role,
            lease_id=lease_id,
            user_name=self._name(role, naming.USER_NAME_MAX, user),
            agent_id=self.agent_id,
            now=now,
            propagation=self.propagation,
            create_grace=self.create_grace,
            on_step=on_step,
        )

    async def _static_user(
        self, role: Role, lease_id: str, now: float, on_step: OnStep, user: str
    ) -> Lease:
        # Announced: deleted one min_remaining after the next rotation, so SDKs have
        # moved to the new key well before.
        expires_at = now + role.ttl + float(self.config.main.agent.min_remaining)
        lease = await static_user.create(
            self.aws,
            self.journal,
            role=role,
            lease_id=lease_id,
            now=now,
            expires_at=expires_at,
            propagation=self.propagation,
            create_grace=self.create_grace,
            on_step=on_step,
        )
        if self.static_store is not None:
            try:  # a restart then serves this key instead of making another
                await trio.to_thread.run_sync(self.static_store.save, lease)
            except Exception as exc:  # (a locked keyring): only the restart suffers
                log.warning("static_user.seal_failed", role=role.name, error=type(exc).__name__)
        return lease

    def restore(self, role: Role) -> Lease | None:
        """At start-up: a static role's current key, if it was sealed at rest and the
        journal still has its lease active (blocking: before the event loop)."""
        if self.static_store is None or role.credential_type != "static_user":
            return None
        now = time.time()
        current = sorted(
            (
                r
                for r in self.journal.all()
                if r.role == role.name and r.thing == "key" and r.state == "active"
                and r.access_key_id and r.revoke_at > now
            ),
            key=lambda r: r.created_at,
            reverse=True,
        )  # fmt: skip
        for record in current[:1]:
            secret = self.static_store.load(role.name, record)
            if secret is not None:
                log.info("static_user.restored", role=role.name, key=record.access_key_id)
                return Lease(
                    id=record.lease_id,
                    role=role.name,
                    credential_type="static_user",
                    access_key_id=str(record.access_key_id),
                    secret_access_key=secret,
                    session_token=None,
                    issued_at=record.created_at,
                    expires_at=record.revoke_at,
                    hard_expires_at=record.revoke_at,
                    user_name=record.user_name,
                )
        return None

    async def _assume_role(
        self, role: Role, lease_id: str, now: float, on_step: OnStep, user: str
    ) -> Lease:
        on_step("assume_role")
        name = self._name(role, naming.SESSION_NAME_MAX, user, role.session_name)
        source = (
            self._name(role, naming.SOURCE_IDENTITY_MAX, user, role.source_identity)
            if role.source_identity
            else None
        )
        tags = [(key, self._tag_value(value, role, user)) for key, value in role.session_tags]
        return await sts.assume_role(self.aws, role, lease_id, name, now, source, tags)

    async def _federation_token(
        self, role: Role, lease_id: str, now: float, on_step: OnStep, user: str
    ) -> Lease:
        on_step("federation_token")
        name = self._name(role, naming.FEDERATION_NAME_MAX, user, role.session_name)
        return await sts.federation_token(self.aws, role, lease_id, name, now)

    async def _session_token(
        self, role: Role, lease_id: str, now: float, on_step: OnStep, user: str
    ) -> Lease:
        on_step("session_token")
        return await sts.session_token(self.aws, role, lease_id, now)

    async def extend(self, lease: Lease, expires_at: float) -> None:
        if lease.user_name:
            await iam_user.extend(self.aws, lease.user_name, expires_at)

    async def unlock(self, code: str) -> float:
        return await self.aws.unlock(code)

    def forget_session(self) -> None:
        self.aws.forget_session()

    @property
    def root_problem(self) -> str | None:
        """Why AWS currently refuses the root, if it does."""
        return self.aws.root_problem

    async def revoke_sessions(self, role: Role, at: float) -> None:
        """Deny every session of this role issued before ``at`` (aws/session_revocation.py)."""
        if role.credential_type == "federation_token":
            await session_revocation.deny_federation_sessions(self.aws, at)
            return
        for arn in role.role_arns:
            await session_revocation.deny_role_sessions(self.aws, arn, at)

    async def delete_key(self, user_name: str, access_key_id: str | None, keep: list[str]) -> bool:
        return await static_user.delete_key(self.aws, user_name, access_key_id, keep)

    async def delete_user(self, user_name: str) -> bool:
        return await iam_user.delete(self.aws, user_name)

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


Issuer = Callable[[AwsBackend, Role, str, float, OnStep, str], Awaitable[Lease]]

# kinds.Kind.issuer -> the function that mints it.
ISSUERS: dict[str, Issuer] = {
    "iam_user": AwsBackend._iam_user,
    "assume_role": AwsBackend._assume_role,
    "federation_token": AwsBackend._federation_token,
    "session_token": AwsBackend._session_token,
    "static_user": AwsBackend._static_user,
}
