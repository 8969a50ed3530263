"""Vault parity and past it: sessions that name the person, revocation that tells
the truth about STS (and can deny live sessions), console sign-in."""

from __future__ import annotations

import getpass
import json
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dyncreds.aws.standin import StandIn
from dyncreds.protocol import parse_rfc3339
from tests.conftest import AgentProcess, iam_user_role, make_assumable_role
from tests.e2e.conftest import Rig

pytestmark = pytest.mark.e2e

FEDERATION = """\
credential_type = "federation_token"
policy_arns = ["arn:aws:iam::aws:policy/AmazonEC2ReadOnlyAccess"]
revoke_sessions = true
"""


def assumed(arn: str, extra: str = "") -> str:
    return f'credential_type = "assumed_role"\nrole_arns = ["{arn}"]\n{extra}'


def test_assume_role_names_the_person(aws: StandIn, rig: Callable[..., Rig]) -> None:
    arn = make_assumable_role(aws)
    extra = (
        'session_name = "{user}-{role}-{host}"\nsource_identity = "{user}"\n'
        'session_tags = { who = "{user}@{host}" }\n'
    )
    made = rig({"deploy": assumed(arn, extra)})
    agent = made.start()
    creds = agent.request("credentials", role="deploy")["credentials"]
    user, host = getpass.getuser(), socket.gethostname().split(".")[0]
    [call] = made.proxy.calls_of("AssumeRole")
    assert call.params["RoleSessionName"] == f"{user}-deploy-{host}"
    assert call.params["SourceIdentity"] == user
    assert call.params["Tags.member.1.Value"] == f"{user}@{host}"
    sts = aws.client(
        "sts",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    identity = sts.get_caller_identity()["Arn"]
    assert identity.endswith(f"assumed-role/deploy/{user}-deploy-{host}")


def _deny_date(document: Any) -> float:
    if isinstance(document, str):
        document = json.loads(urllib.parse.unquote(document))
    [statement] = document["Statement"]
    assert statement["Effect"] == "Deny" and statement["Action"] == "*"
    return parse_rfc3339(statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"])


def test_revoke_sessions_denies_live_sessions_and_says_so(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    arn = make_assumable_role(aws)
    agent = start_agent({"deploy": assumed(arn, "revoke_sessions = true\n"), "plain": assumed(arn)})
    iam = aws.client("iam")
    assert agent.request("credentials", role="deploy")["ok"]
    first = agent.cli("revoke", "--role", "deploy").stdout
    assert "denied from " in first, first
    when = parse_rfc3339(first.split("denied from ")[1].split()[0])
    policy = iam.get_role_policy(RoleName="deploy", PolicyName="dyncreds-revoke-sessions")
    assert _deny_date(policy["PolicyDocument"]) == when
    assert agent.request("credentials", role="deploy")["ok"]  # a fresh session after
    second = agent.cli("revoke", "--role", "deploy").stdout
    later = parse_rfc3339(second.split("denied from ")[1].split()[0])
    assert later >= when
    assert iam.list_role_policies(RoleName="deploy")["PolicyNames"] == [
        "dyncreds-revoke-sessions"
    ]  # updated, not a second policy
    policy = iam.get_role_policy(RoleName="deploy", PolicyName="dyncreds-revoke-sessions")
    assert _deny_date(policy["PolicyDocument"]) == later
    # Without the option, the truth: STS credentials live on until they expire.
    assert agent.request("credentials", role="plain")["ok"]
    honest = agent.cli("revoke", "--role", "plain").stdout
    assert "valid until" in honest and "STS credentials cannot be deleted" in honest
    status = agent.request("status")
    assert any("denied from" in r["outcome"] for r in status["revocations"])


def test_revoking_federation_sessions_keeps_the_agent_working(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"fed": FEDERATION, "ec2": iam_user_role()})
    assert agent.request("credentials", role="fed")["ok"]
    out = agent.cli("revoke", "--role", "fed").stdout
    assert "denied from" in out
    # moto evaluates no conditions: to it, this Deny covers the root user's own key
    # too. In AWS the condition on aws:TokenIssueTime, which long-term keys do not
    # have, spares it. So: read the policy with enforcement off, check that
    # condition, and take the policy away again before the agent goes on.
    aws.enforce_iam(unauthenticated_requests=1_000_000_000)
    iam = aws.client("iam")
    policy = iam.get_user_policy(UserName="vaultuser", PolicyName="dyncreds-revoke-sessions")
    assert _deny_date(policy["PolicyDocument"]) == parse_rfc3339(
        out.split("denied from ")[1].split()[0]
    )
    iam.delete_user_policy(UserName="vaultuser", PolicyName="dyncreds-revoke-sessions")
    aws.enforce_iam()
    assert agent.request("credentials", role="fed")["ok"]
    assert agent.request("credentials", role="ec2")["ok"]


# --------------------------------------------------------------------------- login


class FakeSignin:
    """AWS's federation endpoint, as far as `login` uses it: checks the Session."""

    def __init__(self) -> None:
        self.sessions: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                session = json.loads(query["Session"][0])
                ok = all(session.get(k) for k in ("sessionId", "sessionKey", "sessionToken"))
                fake.sessions.append(session)
                body = json.dumps({"SigninToken": "tok-123"} if ok else {}).encode()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/federation"


@pytest.fixture
def signin() -> Iterator[FakeSignin]:
    fake = FakeSignin()
    yield fake
    fake.server.shutdown()


LOGIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["ec2:*", "sts:GetFederationToken"], "Resource": "*"}
    ],
}


@pytest.mark.parametrize("role", ["ec2", "deploy", "fed"])
def test_login_prints_a_signin_url_and_never_logs_it(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    signin: FakeSignin,
    role: str,
) -> None:
    arn = make_assumable_role(aws)
    agent = start_agent(
        {"ec2": iam_user_role(LOGIN_POLICY), "deploy": assumed(arn), "fed": FEDERATION}
    )
    config = agent.config_dir / "config.toml"
    config.write_text(
        config.read_text().replace("[root]\n", f'[root]\nsignin_endpoint = "{signin.url}"\n')
    )
    result = agent.cli("login", role, "--print")
    url = result.stdout.strip()
    assert url.startswith(signin.url + "?")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    assert query["Action"] == ["login"] and query["SigninToken"] == ["tok-123"]
    assert len(signin.sessions) == 1
    assert "tok-123" not in agent.log() and "SigninToken" not in agent.log()


def test_login_refuses_session_tokens(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"s": 'credential_type = "session_token"\n'})
    result = agent.cli("login", "s", "--print", check=False)
    assert result.returncode == 2 and "cannot sign in to the console" in result.stderr
