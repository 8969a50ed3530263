"""``iam_user``: a temporary IAM user per lease, with its policies and one key
(aws/iam_user.py does the work: journal before CreateUser, propagation checks,
deletion of everything attached). The only kind whose lease can be extended."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dyncreds.aws.credtypes import Ops
from dyncreds.kinds import POLICY_FIELDS, Kind

if TYPE_CHECKING:
    from dyncreds.aws.credtypes import Host, OnStep
    from dyncreds.config import Role
    from dyncreds.journal import Record
    from dyncreds.leases import Lease, Window

KIND = Kind(
    name="iam_user",
    fields=POLICY_FIELDS | {"iam_groups", "iam_tags", "user_path", "permissions_boundary_arn"},
    min_ttl=60,
    max_ttl=None,
    extendable=True,
    needs_one_of=("policy", "policy_arns", "iam_groups"),
    needs="an iam_user role needs at least one of "
    "policy_document, policy_file, policy_arns or iam_groups",
    policy_arns_max=20,
    on_revoke="deleted",
    journal_thing="user",
)


async def issue(
    host: Host,
    role: Role,
    lease_id: str,
    window: Window,
    on_step: OnStep,
    user: str,
) -> Lease:
    from dyncreds.aws import iam_user, naming

    return await iam_user.create(
        host.aws,
        host.journal,
        role=role,
        lease_id=lease_id,
        user_name=host.name(role, naming.USER_NAME_MAX, user),
        agent_id=host.agent_id,
        window=window,
        propagation=host.propagation,
        create_grace=host.create_grace,
        on_step=on_step,
    )


async def extend(host: Host, lease: Lease, expires_at: float) -> None:
    """The new expiry, on the user's ``dyncreds:expires`` tag."""
    from dyncreds.aws import iam_user

    if lease.user_name:
        await iam_user.extend(host.aws, lease.user_name, expires_at)


async def revoke(host: Host, record: Record) -> bool:
    """The user and everything attached to it; False if it was already gone."""
    from dyncreds.aws import iam_user

    return await iam_user.delete(host.aws, record.user_name)


OPS = Ops(issue=issue, extend=extend, revoke=revoke)
