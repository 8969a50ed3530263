"""Revoking live STS sessions, as the console's "Revoke active sessions" does: an
inline policy that denies everything to sessions whose ``aws:TokenIssueTime`` is
before the revocation. On each of an assumed_role role's ``role_arns``; for
federation tokens, on the root user that issued them (its own long-term key has
no token issue time, so the deny never catches it). A second revocation
rewrites the same policy with the later date.

With an MFA lock the agent itself runs on a session of that root user, which the
deny would kill. That session is the only one with MFA (federation tokens and
GetSessionToken without a code never have it), so the user's deny exempts
MFA-authenticated sessions rather than lock the agent out of its own account."""

from __future__ import annotations

import json

from dyncreds.aws.root import user_name_from_arn
from dyncreds.aws.session import AwsSession
from dyncreds.protocol import BadRequest, Upstream, rfc3339

POLICY_NAME = "dyncreds-revoke-sessions"


def deny_issued_before(at: float, *, spare_mfa: bool = False) -> str:
    condition: dict[str, dict[str, str]] = {"DateLessThan": {"aws:TokenIssueTime": rfc3339(at)}}
    if spare_mfa:
        condition["BoolIfExists"] = {"aws:MultiFactorAuthPresent": "false"}
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DyncredsRevokeOlderSessions",
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": condition,
                }
            ],
        },
        separators=(",", ":"),
    )


def _needs(permission: str, target: str, exc: Upstream) -> Upstream:
    if exc.aws_code in ("AccessDenied", "AccessDeniedException"):
        return Upstream(
            f"revoking sessions needs {permission} on {target} for the agent's root; "
            f"AWS said: {exc.message}",
            aws_code=exc.aws_code,
        )
    return exc


async def deny_role_sessions(aws: AwsSession, role_arn: str, at: float) -> None:
    name = role_arn.rsplit("/", 1)[-1]
    try:
        await aws.call(
            "iam",
            "put_role_policy",
            RoleName=name,
            PolicyName=POLICY_NAME,
            PolicyDocument=deny_issued_before(at),
        )
    except Upstream as exc:
        raise _needs("iam:PutRolePolicy", role_arn, exc) from None


async def deny_federation_sessions(aws: AwsSession, at: float) -> str:
    """Deny the root user's federation sessions issued before ``at``; its name."""
    arn = str((await aws.call("sts", "get_caller_identity"))["Arn"])
    user = user_name_from_arn(arn)
    if user is None:
        raise BadRequest(f"federation sessions of {arn} cannot be revoked: it is not an IAM user")
    try:
        await aws.call(
            "iam",
            "put_user_policy",
            UserName=user,
            PolicyName=POLICY_NAME,
            PolicyDocument=deny_issued_before(at, spare_mfa=aws.mfa.enabled),
        )
    except Upstream as exc:
        raise _needs("iam:PutUserPolicy", arn, exc) from None
    return user
