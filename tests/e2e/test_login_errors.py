"""`login`'s failures are one line saying which: a policy without
sts:GetFederationToken (named, no traceback), a sign-in endpoint whose name does
not resolve (told apart from one that refuses the session)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import EC2_ONLY, AgentProcess, iam_user_role
from tests.e2e.test_vault_parity import LOGIN_POLICY, FakeSignin
from tests.e2e.test_vault_parity import signin as signin

pytestmark = pytest.mark.e2e


def with_signin(agent: AgentProcess, url: str) -> None:
    config = agent.config_dir / "config.toml"
    lines = [x for x in config.read_text().splitlines() if not x.startswith("signin_endpoint")]
    text = "\n".join(lines) + "\n"
    config.write_text(text.replace("[root]\n", f'[root]\nsignin_endpoint = "{url}"\n'))


def one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr


def test_login_without_get_federation_token_names_the_permission(
    aws: StandIn, start_agent: Callable[..., AgentProcess], signin: FakeSignin
) -> None:
    agent = start_agent({"ec2": iam_user_role(EC2_ONLY)})
    with_signin(agent, signin.url)
    result = agent.cli("login", "ec2", "--print", check=False)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "sts:GetFederationToken" in line and "roles/ec2.toml" in line
    assert "AccessDenied" in line


def test_login_tells_a_dns_failure_from_a_refusal(
    aws: StandIn, start_agent: Callable[..., AgentProcess], signin: FakeSignin
) -> None:
    agent = start_agent({"ec2": iam_user_role(LOGIN_POLICY)})
    with_signin(agent, "https://signin.invalid/federation")
    result = agent.cli("login", "ec2", "--print", check=False)
    line = one_line(result.stderr)
    assert "could not be reached" in line and "DNS" in line and "refused" not in line
    # An endpoint that answers with an error refused the session.
    with refusing_endpoint() as url:
        with_signin(agent, url)
        refused = agent.cli("login", "ec2", "--print", check=False)
    line = one_line(refused.stderr)
    assert "refused the session: HTTP 403" in line and "could not be reached" not in line


@contextmanager
def refusing_endpoint() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/federation"
    finally:
        server.shutdown()
