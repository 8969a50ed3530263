"""End to end on moto's server with IAM enforcement: the four credential types,
fetched the way programs fetch them (boto3 through credential_process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from dyncreds.aws.standin import StandIn
from dyncreds.protocol import parse_rfc3339
from tests.conftest import (
    AgentProcess,
    iam_user_role,
    make_assumable_role,
    raw_request,
    temp_users,
    write_aws_config,
)

pytestmark = pytest.mark.e2e


def boto3_via_shim(
    aws: StandIn, agent: AgentProcess, profile: str, tmp_path: Path
) -> boto3.Session:
    config = tmp_path / "aws-config"
    write_aws_config(config, [profile])
    os.environ["AWS_CONFIG_FILE"] = str(config)
    os.environ["DYNCREDS_SOCKET"] = str(agent.socket)
    return boto3.Session(profile_name=profile)


def client(session: boto3.Session, service: str, aws: StandIn) -> Any:
    return session.client(
        service,
        endpoint_url=aws.endpoint,  # type: ignore[call-overload]
        region_name="us-east-1",
    )


def test_iam_user_allows_policy_denies_rest_and_dies_on_revoke(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = start_agent({"ec2-full": iam_user_role(extra='iam_tags = { team = "platform" }')})
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    session = boto3_via_shim(aws, agent, "ec2-full", tmp_path)

    identity = client(session, "sts", aws).get_caller_identity()
    users = temp_users(aws)
    assert len(users) == 1
    assert identity["Arn"].endswith(f":user/{users[0]}")

    # What the policy allows works; the rest is denied.
    client(session, "ec2", aws).describe_instances()
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        client(session, "s3", aws).list_buckets()
    assert denied.value.response["Error"]["Code"] == "AccessDenied"

    # All tags at CreateUser.
    tags = {
        t["Key"]: t["Value"] for t in aws.client("iam").list_user_tags(UserName=users[0])["Tags"]
    }
    assert tags["team"] == "platform"
    assert tags["dyncreds:role"] == "ec2-full"
    assert tags["dyncreds:lease"].startswith("ec2-full/")
    assert set(tags) >= {"dyncreds:agent", "dyncreds:expires"}

    credentials = session.get_credentials()
    assert credentials is not None
    frozen = credentials.get_frozen_credentials()
    revoked = agent.request("revoke", role="ec2-full")
    assert revoked["ok"] and revoked["revoked"] == [tags["dyncreds:lease"]]

    assert temp_users(aws) == []
    old = aws.client(
        "sts", aws_access_key_id=frozen.access_key, aws_secret_access_key=frozen.secret_key
    )
    with pytest.raises(botocore.exceptions.ClientError) as rejected:
        old.get_caller_identity()
    assert rejected.value.response["Error"]["Code"] == "InvalidClientTokenId"


def test_iam_user_revocation_removes_everything_attached(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    iam = aws.client("iam")
    iam.create_group(GroupName="developers")
    policy_arn = iam.create_policy(
        PolicyName="read-ec2",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}],
            }
        ),
    )["Policy"]["Arn"]
    agent = start_agent(
        {
            "full": iam_user_role(
                extra=f"""
policy_arns = ["{policy_arn}"]
iam_groups = ["developers"]
user_path = "/dyncreds/"
"""
            )
        }
    )
    body = agent.request("credentials", role="full")
    assert body["ok"], body
    (user,) = temp_users(aws)
    assert iam.get_user(UserName=user)["User"]["Path"] == "/dyncreds/"
    assert [
        p["PolicyArn"] for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]
    ] == [policy_arn]
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName=user)["Groups"]] == [
        "developers"
    ]
    # Something dyncreds did not create: a login profile added by hand.
    iam.create_login_profile(UserName=user, Password="Hunter2-Hunter2!")

    assert agent.request("revoke", lease_id=body["lease"]["id"])["ok"]
    assert temp_users(aws) == []
    assert iam.get_group(GroupName="developers")["Users"] == []


def test_assumed_role_yields_assumed_role_identity(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    arn = make_assumable_role(aws)
    agent = start_agent(
        {"deploy": f'credential_type = "assumed_role"\nrole_arns = ["{arn}"]\nttl = "15m"\n'}
    )
    session = boto3_via_shim(aws, agent, "deploy", tmp_path)
    identity = client(session, "sts", aws).get_caller_identity()
    assert ":assumed-role/deploy/" in identity["Arn"]
    body = agent.request("credentials", role="deploy")
    assert body["credentials"]["SessionToken"]
    remaining = parse_rfc3339(body["credentials"]["Expiration"]) - time.time()
    assert 800 < remaining <= 900


@pytest.mark.parametrize("kind", ["federation_token", "session_token"])
def test_sts_tokens_report_aws_expiration(
    kind: str,
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    policy = iam_user_role().split("\n", 1)[1] if kind == "federation_token" else ""
    agent = start_agent({"t": f'credential_type = "{kind}"\nttl = "20m"\n{policy}'})
    body = agent.request("credentials", role="t")
    assert body["ok"], body
    creds = body["credentials"]
    assert creds["SessionToken"] and creds["AccessKeyId"]
    remaining = parse_rfc3339(creds["Expiration"]) - time.time()
    assert 1100 < remaining <= 1200  # what AWS said: the 20 minutes asked for
    assert body["lease"]["expires_at"] == creds["Expiration"]
    assert temp_users(aws) == []  # STS types create nothing in IAM


def test_herd_of_200_creates_exactly_one_user(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent({"cold": iam_user_role()})

    def fetch(_: int) -> str:
        body = raw_request(agent.socket, {"op": "credentials", "role": "cold"})
        assert body["ok"], body
        return str(body["credentials"]["AccessKeyId"])

    with ThreadPoolExecutor(max_workers=200) as pool:
        keys = set(pool.map(fetch, range(200)))
    assert len(keys) == 1
    assert len(temp_users(aws)) == 1
    status = agent.request("status")
    (role,) = status["roles"]
    assert role["counters"]["issued"] == 1


def test_shim_prints_credential_json_and_nothing_else(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dyncreds-shim"), "ec2"],
        env=agent.env,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    body = json.loads(result.stdout)
    assert list(body) == ["Version", "AccessKeyId", "SecretAccessKey", "Expiration"]
    assert body["Version"] == 1
    assert body["Expiration"].endswith("Z")


def test_status_never_shows_secrets(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    arn = make_assumable_role(aws)
    agent = start_agent(
        {
            "ec2": iam_user_role(),
            "deploy": f'credential_type = "assumed_role"\nrole_arns = ["{arn}"]\n',
        }
    )
    secrets = []
    for role in ("ec2", "deploy"):
        creds = agent.request("credentials", role=role)["credentials"]
        secrets.append(creds["SecretAccessKey"])
        if "SessionToken" in creds:
            secrets.append(creds["SessionToken"])
    text = json.dumps(agent.request("status")) + agent.cli("status").stdout
    text += agent.log()
    # Indexes only: a failing assertion must not print the secrets it found.
    secrets.append(aws.admin_keys["SecretAccessKey"])
    leaked = [i for i, secret in enumerate(secrets) if secret in text]
    assert leaked == []
