"""``federation_token``: sts:GetFederationToken with the role's policy
(aws/sts.py); ``revoke_sessions`` denies every federated user's sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dyncreds.aws.credtypes import Ops
from dyncreds.kinds import HOUR, POLICY_FIELDS, Kind

if TYPE_CHECKING:
    from dyncreds.aws.credtypes import Host, OnStep
    from dyncreds.config import Role
    from dyncreds.leases import Lease, Window

KIND = Kind(
    name="federation_token",
    fields=POLICY_FIELDS | {"session_name", "revoke_sessions"},
    min_ttl=15 * 60,
    max_ttl=36 * HOUR,
    extendable=False,
    needs_one_of=("policy", "policy_arns"),
    needs="a federation_token role needs policy_document, policy_file or policy_arns "
    "(without one the token can do nothing)",
    # The deny is on every federated user of the root: it reaches all of them.
    sessions_scope="kind",
)


async def issue(
    host: Host, role: Role, lease_id: str, window: Window, on_step: OnStep, user: str
) -> Lease:
    from dyncreds.aws import naming, sts

    on_step("federation_token")
    name = host.name(role, naming.FEDERATION_NAME_MAX, user, role.session_name)
    return await sts.federation_token(host.aws, role, lease_id, name, window)


async def revoke_sessions(host: Host, role: Role, at: float) -> None:
    """Deny every federation token issued before ``at`` (aws/session_revocation.py)."""
    from dyncreds.aws import session_revocation

    await session_revocation.deny_federation_sessions(host.aws, at)


OPS = Ops(issue=issue, revoke_sessions=revoke_sessions)
