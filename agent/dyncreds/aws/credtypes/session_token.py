"""``session_token``: sts:GetSessionToken of the root key itself (aws/sts.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dyncreds.aws.credtypes import Ops
from dyncreds.kinds import HOUR, Kind

if TYPE_CHECKING:
    from dyncreds.aws.credtypes import Host, OnStep
    from dyncreds.config import Role
    from dyncreds.leases import Lease, Window

KIND = Kind(
    name="session_token",
    fields=frozenset(),
    min_ttl=15 * 60,
    max_ttl=36 * HOUR,
    extendable=False,
    login_refused="GetSessionToken credentials cannot sign in to the console (AWS refuses "
    "them); use an assumed_role or federation_token role",
)


async def issue(
    host: Host, role: Role, lease_id: str, window: Window, on_step: OnStep, user: str
) -> Lease:
    from dyncreds.aws import sts

    on_step("session_token")
    return await sts.session_token(host.aws, role, lease_id, window)


OPS = Ops(issue=issue)
