"""Temporary IAM users: how one is created, proven, extended and deleted.

Creation, in round trips:
  1. CreateUser, with path, permissions boundary and *all* tags in the one call
     (Vault tags in a second call; a crash between the two leaves an untagged,
     unfindable user);
  2. at once and concurrently: PutUserPolicy, each AttachUserPolicy, each
     AddUserToGroup and CreateAccessKey - they are independent of each other;
  3. GetCallerIdentity with the new key until it has worked ``checks`` times in
     a row: IAM is eventually consistent and a fresh key is often rejected for
     seconds (hashicorp/vault#3115, #8413); dyncreds never hands out a key that
     does not work yet.

The journal row is committed before step 1, so a crash at any point leaves a
record that recovery cleans up. A failure or cancellation hands the record to the
reaper at once (the client is answered first): it deletes whatever was created,
and - since an abandoned CreateUser may still land in AWS - deletes once more
after ``create_grace``, before the record is forgotten.

Deletion removes everything that would block DeleteUser - access keys, managed
policies, inline policies, group memberships, login profile, MFA devices,
signing certificates, SSH keys, service-specific credentials - concurrently,
tolerating "already gone", then the user.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from dyncreds import logs
from dyncreds.aws.errors import GONE_CODES, aws_code
from dyncreds.aws.session import AwsSession
from dyncreds.config import Role
from dyncreds.journal import Journal
from dyncreds.leases import Lease, Secret, Window
from dyncreds.protocol import Upstream, parse_rfc3339, rfc3339

log = logs.get("aws")


# The tags on every user dyncreds creates (all in CreateUser's one call): what the
# orphan sweep reads when the journal is lost. An on-AWS format that older agents
# and fleets read - the keys do not change. ``TAG_EXPIRY`` is the lease's expiry.
TAG_AGENT = "dyncreds:agent"
TAG_LEASE = "dyncreds:lease"
TAG_ROLE = "dyncreds:role"
TAG_EXPIRY = "dyncreds:expires"


@dataclass(frozen=True)
class TaggedUser:
    """A user found by its tags, read back in the journal's words."""

    name: str
    tags: dict[str, str]
    created_at: float

    @property
    def agent(self) -> str:
        return self.tags.get(TAG_AGENT, "")

    @property
    def lease_id(self) -> str | None:
        return self.tags.get(TAG_LEASE) or None

    @property
    def role(self) -> str:
        return self.tags.get(TAG_ROLE, "?")

    @property
    def expires_at(self) -> float | None:
        """The expiry its tag announced; None if the tag is missing or unreadable."""
        try:
            return parse_rfc3339(self.tags[TAG_EXPIRY])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Propagation:
    checks: int = 3  # successes in a row
    timeout: float = 60.0
    interval: float = 0.25


def tags(agent_id: str, lease_id: str, role: Role, expires_at: float) -> list[dict[str, str]]:
    own = [
        {"Key": TAG_AGENT, "Value": agent_id},
        {"Key": TAG_LEASE, "Value": lease_id},
        {"Key": TAG_ROLE, "Value": role.name},
        {"Key": TAG_EXPIRY, "Value": rfc3339(expires_at)},
    ]
    return own + [{"Key": key, "Value": value} for key, value in role.iam_tags]


async def create(
    aws: AwsSession,
    journal: Journal,
    *,
    role: Role,
    lease_id: str,
    user_name: str,
    agent_id: str,
    window: Window,
    propagation: Propagation,
    create_grace: float = 300.0,
    on_step: Callable[[str], None] = lambda step: None,
) -> Lease:
    """Create the user and its key; return a lease that works. On failure the
    journal record is left for the reaper (or dropped, if nothing was created)."""
    expires_at = window.expires_at
    await journal.creating(lease_id, role.name, user_name, window.issued_at, expires_at)
    create_failed: Upstream | None = None
    try:
        on_step("create_user")
        params = _create_user_params(role, user_name, agent_id, lease_id, expires_at)
        try:
            created = await aws.call("iam", "create_user", **params)
        except Upstream as exc:
            create_failed = exc
            raise
        arn = created["User"]["Arn"]

        on_step("grant")
        key: dict[str, Any] = {}

        async def create_key() -> None:
            result = await aws.call("iam", "create_access_key", UserName=user_name)
            key.update(result["AccessKey"])
            await journal.key_created(lease_id, key["AccessKeyId"])

        await _all([create_key, *_grant_jobs(aws, role, user_name)])
        secret = Secret(key.pop("SecretAccessKey"))
        on_step("propagate")
        await wait_until_usable(aws, key["AccessKeyId"], secret, propagation)
        on_step("activate")
        await journal.activate(lease_id, expires_at)
    except BaseException as exc:
        await _after_failure(journal, lease_id, user_name, exc, create_failed, create_grace)
        raise
    return Lease(
        id=lease_id,
        role=role.name,
        credential_type=role.credential_type,
        access_key_id=key["AccessKeyId"],
        secret_access_key=secret,
        session_token=None,
        issued_at=window.issued_at,
        expires_at=expires_at,
        hard_expires_at=window.hard_expires_at,
        user_name=user_name,
        arn=arn,
    )


def _create_user_params(
    role: Role, user_name: str, agent_id: str, lease_id: str, expires_at: float
) -> dict[str, Any]:
    """CreateUser's arguments: the role's path and boundary, and the tags the reaper
    reads to find the user's lease and expiry if the journal is lost."""
    params: dict[str, Any] = {
        "UserName": user_name,
        "Path": role.user_path,
        "Tags": tags(agent_id, lease_id, role, expires_at),
    }
    if role.permissions_boundary_arn:
        params["PermissionsBoundary"] = role.permissions_boundary_arn
    return params


def _grant_jobs(aws: AwsSession, role: Role, user_name: str) -> list[Callable[[], Awaitable[Any]]]:
    """One call per grant the role names (inline policy, managed policies, groups);
    they are independent, so create runs them concurrently with the key."""
    jobs = [
        _bind(
            aws.call,
            "iam",
            "put_user_policy",
            UserName=user_name,
            PolicyName=f"dyncreds-{role.name}"[:128],
            PolicyDocument=role.policy_document,
        )
    ] * bool(role.policy_document)
    jobs += [
        _bind(aws.call, "iam", "attach_user_policy", UserName=user_name, PolicyArn=arn)
        for arn in role.policy_arns
    ]
    jobs += [
        _bind(aws.call, "iam", "add_user_to_group", UserName=user_name, GroupName=group)
        for group in role.iam_groups
    ]
    return jobs


async def _after_failure(
    journal: Journal,
    lease_id: str,
    user_name: str,
    exc: BaseException,
    create_failed: Upstream | None,
    grace: float,
) -> None:
    """Hand a failed issuance to the reaper - the client gets its error now, and the
    cleanup happens after the answer, not before it. Shielded: this also runs when
    the issuance was cancelled (timeout, shutdown)."""
    with trio.CancelScope(shield=True):
        if create_failed is not None and create_failed.created_nothing:
            # AWS refused CreateUser outright (or it was never sent): no user.
            await journal.forget(lease_id)
            outcome = "nothing created"
        else:
            # CreateUser may have happened, or may still happen: an attempt held
            # somewhere on the way can reach AWS until its signature expires. The
            # reaper deletes now, and once more after the grace period.
            now = time.time()
            await journal.abandon(lease_id, now, settle_until=now + grace)
            outcome = "left to the reaper"
        log.info(
            "lease.issue_abandoned",
            lease=lease_id,
            user=user_name,
            outcome=outcome,
            error=getattr(exc, "message", type(exc).__name__),
        )


async def wait_until_usable(
    aws: AwsSession,
    access_key_id: str,
    secret: Secret,
    propagation: Propagation,
    session_token: Secret | None = None,
) -> None:
    """Until the key has worked ``checks`` times in a row, within ``timeout``."""
    if propagation.checks <= 0:
        return
    # Building a boto3 client costs tens of milliseconds of CPU: in a worker thread,
    # or fifty issuances at once would stall every cached request behind them.
    client = await trio.to_thread.run_sync(
        partial(aws.client_for_keys, "sts", access_key_id, secret, session_token),
        limiter=aws.limiter,
    )
    streak = 0
    attempts = 0
    last_code = "none"
    try:
        with trio.fail_after(propagation.timeout):
            while streak < propagation.checks:
                attempts += 1
                try:
                    await aws.call_client(client, "get_caller_identity")
                    streak += 1
                except Upstream as exc:
                    streak = 0
                    last_code = exc.aws_code
                if streak < propagation.checks:
                    await trio.sleep(
                        propagation.interval if streak == 0 else propagation.interval / 2
                    )
    except trio.TooSlowError:
        raise Upstream(
            f"the new access key {access_key_id} did not start working within "
            f"{propagation.timeout:g}s ({attempts} checks, last error {last_code})",
            aws_code="KeyPropagationTimeout",
            retryable=True,
        ) from None


async def extend(aws: AwsSession, user_name: str, expires_at: float) -> None:
    """Record the new expiry on the user, for anyone (or any sweep) reading tags."""
    await aws.call(
        "iam",
        "tag_user",
        UserName=user_name,
        Tags=[{"Key": TAG_EXPIRY, "Value": rfc3339(expires_at)}],
    )


@dataclass(frozen=True)
class Attachment:
    """Something attached to a user that blocks DeleteUser: how to list it, and
    how to remove each item (``field`` of a listed item, None: the item itself)."""

    list_op: str
    key: str
    remove_op: str
    param: str
    field: str | None


ACCESS_KEYS = Attachment(
    "list_access_keys", "AccessKeyMetadata", "delete_access_key", "AccessKeyId", "AccessKeyId"
)
ATTACHMENTS = (
    Attachment(
        "list_attached_user_policies",
        "AttachedPolicies",
        "detach_user_policy",
        "PolicyArn",
        "PolicyArn",
    ),
    Attachment("list_user_policies", "PolicyNames", "delete_user_policy", "PolicyName", None),
    Attachment(
        "list_groups_for_user", "Groups", "remove_user_from_group", "GroupName", "GroupName"
    ),
    Attachment(
        "list_mfa_devices", "MFADevices", "deactivate_mfa_device", "SerialNumber", "SerialNumber"
    ),
    Attachment(
        "list_signing_certificates",
        "Certificates",
        "delete_signing_certificate",
        "CertificateId",
        "CertificateId",
    ),
    Attachment(
        "list_ssh_public_keys",
        "SSHPublicKeys",
        "delete_ssh_public_key",
        "SSHPublicKeyId",
        "SSHPublicKeyId",
    ),
)


async def _listed(aws: AwsSession, user_name: str, operation: str, key: str) -> list[Any]:
    """Every page of a List* call; [] if the user is already gone."""
    items: list[Any] = []
    marker: dict[str, str] = {}
    try:
        while True:
            page = await aws.call("iam", operation, UserName=user_name, **marker)
            items.extend(page.get(key, []))
            if not page.get("IsTruncated"):
                return items
            marker = {"Marker": page["Marker"]}
    except Upstream as exc:
        if exc.aws_code in GONE_CODES:
            return []
        raise


async def _gone_ok(aws: AwsSession, operation: str, **params: Any) -> None:
    """A removal; "already gone" counts as done."""
    try:
        await aws.call("iam", operation, **params)
    except Upstream as exc:
        if exc.aws_code not in GONE_CODES:
            raise


async def _remove_all(aws: AwsSession, user_name: str, what: Attachment) -> None:
    for item in await _listed(aws, user_name, what.list_op, what.key):
        value = item if what.field is None else item[what.field]
        await _gone_ok(aws, what.remove_op, UserName=user_name, **{what.param: value})


async def delete(aws: AwsSession, user_name: str) -> bool:
    """Delete the user and everything attached to it. False if it was already gone."""
    # Keys first and alone: the moment they are gone the credentials stop working,
    # whatever happens to the rest of the cleanup.
    await _remove_all(aws, user_name, ACCESS_KEYS)
    await _all(
        [partial(_remove_all, aws, user_name, what) for what in ATTACHMENTS]
        + [partial(_gone_ok, aws, "delete_login_profile", UserName=user_name)]
    )
    try:
        await aws.call("iam", "delete_user", UserName=user_name)
    except Upstream as exc:
        if exc.aws_code in GONE_CODES:
            return False
        raise
    return True


async def list_tagged_users(aws: AwsSession, agent_ids: set[str]) -> list[TaggedUser]:
    """Every user tagged with one of these agents' ids (for the orphan sweep)."""
    found: list[TaggedUser] = []
    marker: str | None = None
    while True:
        page = await aws.call("iam", "list_users", **({"Marker": marker} if marker else {}))
        for user in page.get("Users", []):
            name = user["UserName"]
            try:
                tag_page = await aws.call("iam", "list_user_tags", UserName=name)
            except Upstream as exc:
                if aws_code(exc) in GONE_CODES:
                    continue
                raise
            user_tags = {t["Key"]: t["Value"] for t in tag_page.get("Tags", [])}
            if user_tags.get(TAG_AGENT) in agent_ids:
                found.append(TaggedUser(name, user_tags, user["CreateDate"].timestamp()))
        if not page.get("IsTruncated"):
            return found
        marker = page["Marker"]


def _bind(
    fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
) -> Callable[[], Awaitable[Any]]:
    async def run() -> None:
        await fn(*args, **kwargs)

    return run


async def _all(jobs: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    """Run jobs concurrently; the first failure cancels the rest and is raised
    as itself (not as an exception group), so callers see one dyncreds error."""
    if len(jobs) == 1:
        await jobs[0]()
        return
    failures: list[BaseException] = []

    async def guarded(job: Callable[[], Awaitable[Any]], scope: trio.CancelScope) -> None:
        try:
            await job()
        except Exception as exc:
            failures.append(exc)
            scope.cancel()

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(guarded, job, nursery.cancel_scope)
    if failures:
        raise failures[0]
