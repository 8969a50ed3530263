"""``assumed_role``: sts:AssumeRole on the role's first ARN (aws/sts.py), the
session named after the person; ``revoke_sessions`` denies the ARNs' sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dyncreds.aws.credtypes import Ops
from dyncreds.kinds import HOUR, POLICY_FIELDS, Kind

if TYPE_CHECKING:
    from dyncreds.aws.credtypes import Host, OnStep
    from dyncreds.config import Role
    from dyncreds.leases import Lease, Window

KIND = Kind(
    name="assumed_role",
    fields=POLICY_FIELDS
    | {
        "role_arns",
        "external_id",
        "session_tags",
        "session_name",
        "source_identity",
        "revoke_sessions",
    },
    min_ttl=15 * 60,
    max_ttl=12 * HOUR,
    extendable=False,
    needs_one_of=("role_arns",),
    needs="an assumed_role role needs role_arns",
    sessions_scope="role_arns",
)


async def issue(
    host: Host, role: Role, lease_id: str, window: Window, on_step: OnStep, user: str
) -> Lease:
    from dyncreds.aws import naming, sts

    on_step("assume_role")
    name = host.name(role, naming.SESSION_NAME_MAX, user, role.session_name)
    source = (
        host.name(role, naming.SOURCE_IDENTITY_MAX, user, role.source_identity)
        if role.source_identity
        else None
    )
    tags = [(key, host.tag_value(value, role, user)) for key, value in role.session_tags]
    return await sts.assume_role(host.aws, role, lease_id, name, window, source, tags)


async def revoke_sessions(host: Host, role: Role, at: float) -> None:
    """Deny, on each of the role's ARNs, every session issued before ``at``."""
    from dyncreds.aws import session_revocation

    for arn in role.role_arns:
        await session_revocation.deny_role_sessions(host.aws, arn, at)


OPS = Ops(issue=issue, revoke_sessions=revoke_sessions)
