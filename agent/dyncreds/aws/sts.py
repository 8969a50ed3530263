"""The STS calls of the three STS credential types (aws/credtypes/): AssumeRole,
GetFederationToken, GetSessionToken.

Nothing is created in AWS, so nothing is journaled or revoked: the credentials
lapse at AWS's ``Expiration``, which is what clients are told. The duration asked
for is the window's (``leases.window``); AWS's answer bounds what is served.
"""

from __future__ import annotations

from typing import Any

from dyncreds.aws.session import AwsSession
from dyncreds.config import Role
from dyncreds.leases import Lease, Secret, Window


def _policy_params(role: Role) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if role.policy_document:
        params["Policy"] = role.policy_document
    if role.policy_arns:
        params["PolicyArns"] = [{"arn": arn} for arn in role.policy_arns]
    return params


async def assume_role(
    aws: AwsSession,
    role: Role,
    lease_id: str,
    session_name: str,
    window: Window,
    source_identity: str | None = None,
    tags: list[tuple[str, str]] | None = None,
) -> Lease:
    params = {
        "RoleArn": role.role_arns[0],
        "RoleSessionName": session_name,
        "DurationSeconds": window.duration,
        **_policy_params(role),
    }
    if role.external_id:
        params["ExternalId"] = role.external_id
    if source_identity:  # who, in CloudTrail, for the whole session chain
        params["SourceIdentity"] = source_identity
    if tags:
        params["Tags"] = [{"Key": k, "Value": v} for k, v in tags]
    result = await aws.call("sts", "assume_role", **params)
    return _lease(role, lease_id, window, result, result.get("AssumedRoleUser", {}).get("Arn"))


async def federation_token(
    aws: AwsSession, role: Role, lease_id: str, name: str, window: Window
) -> Lease:
    result = await aws.call(
        "sts",
        "get_federation_token",
        Name=name,
        DurationSeconds=window.duration,
        **_policy_params(role),
    )
    return _lease(role, lease_id, window, result, result.get("FederatedUser", {}).get("Arn"))


async def session_token(aws: AwsSession, role: Role, lease_id: str, window: Window) -> Lease:
    result = await aws.call("sts", "get_session_token", DurationSeconds=window.duration)
    return _lease(role, lease_id, window, result, None)


def _lease(
    role: Role, lease_id: str, window: Window, result: dict[str, Any], arn: str | None
) -> Lease:
    creds = result["Credentials"]
    expires_at = creds["Expiration"].timestamp()  # AWS's: it bounds the window's
    return Lease(
        id=lease_id,
        role=role.name,
        credential_type=role.credential_type,
        access_key_id=creds["AccessKeyId"],
        secret_access_key=Secret(creds["SecretAccessKey"]),
        session_token=Secret(creds["SessionToken"]),
        issued_at=window.issued_at,
        expires_at=expires_at,
        hard_expires_at=expires_at,
        arn=arn,
    )
