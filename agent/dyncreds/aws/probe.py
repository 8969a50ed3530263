"""Who is this? sts:GetCallerIdentity for the CLI (``configure root``), blocking,
with short timeouts: a check offered before anything is written."""

from __future__ import annotations

import boto3
import botocore.config

from dyncreds.aws.errors import map_errors
from dyncreds.leases import Secret

UNREACHABLE = frozenset({"ConnectionError", "RequestTimeout", "EndpointConnectionError"})


def caller_arn(
    *,
    region: str,
    sts_endpoint: str | None,
    profile: str | None = None,
    access_key_id: str | None = None,
    secret: Secret | None = None,
) -> str:
    """The ARN these credentials act as; Upstream if AWS refuses them (``aws_code``
    in ``UNREACHABLE`` when AWS could not be reached at all)."""
    config = botocore.config.Config(
        connect_timeout=5, read_timeout=10, retries={"mode": "standard", "total_max_attempts": 2}
    )
    with map_errors("GetCallerIdentity"):
        if access_key_id is not None and secret is not None:
            session = boto3.Session(
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret.reveal(),
                region_name=region,
            )
        else:
            session = boto3.Session(profile_name=profile, region_name=region)
        client = session.client("sts", endpoint_url=sts_endpoint, config=config)
        return str(client.get_caller_identity()["Arn"])


def federation_token(
    *,
    region: str,
    sts_endpoint: str | None,
    access_key_id: str,
    secret: str,
    name: str,
    seconds: int,
) -> dict[str, str]:
    """sts:GetFederationToken signed by an IAM user's own key, with a session
    policy that allows everything: the session can do what the user can, no more
    (AWS intersects the two)."""
    allow_all = (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
    )
    with map_errors("GetFederationToken"):
        client = boto3.client(
            "sts",
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret,
            region_name=region,
            endpoint_url=sts_endpoint,
            config=botocore.config.Config(connect_timeout=5, read_timeout=10),
        )
        creds = client.get_federation_token(Name=name, Policy=allow_all, DurationSeconds=seconds)
    result = creds["Credentials"]
    return {
        "AccessKeyId": result["AccessKeyId"],
        "SecretAccessKey": result["SecretAccessKey"],
        "SessionToken": result["SessionToken"],
    }
