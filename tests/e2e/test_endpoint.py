"""Credential endpoints: `dyncreds exec` gives a program a loopback ECS endpoint,
not keys, and every SDK resolves the lease's identity through it; a long-running
child crosses lease replacements; the endpoint refuses what it must; `serve
--imds` speaks IMDSv2 to boto3."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, iam_user_role, make_assumable_role, temp_users, wait_for
from tests.e2e.test_clients import GO_TEMPLATE, NODE_DIR, available, build_go, need

pytestmark = pytest.mark.e2e

BOTO3 = """
import os, boto3
assert "AWS_ACCESS_KEY_ID" not in os.environ and "AWS_PROFILE" not in os.environ
assert os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"].startswith("http://127.0.0.1:")
print(boto3.client("sts", endpoint_url=os.environ["EP"]).get_caller_identity()["Arn"])
"""

JS = """
const { STSClient, GetCallerIdentityCommand } = require("@aws-sdk/client-sts");
(async () => {
  const client = new STSClient({ region: "us-east-1", endpoint: process.env.EP });
  const out = await client.send(new GetCallerIdentityCommand({}));
  console.log(out.Arn);
})().catch((err) => { console.error(String(err)); process.exit(1); });
"""

GO = GO_TEMPLATE.replace("{options}", "")  # the default chain: the container provider


@pytest.fixture(scope="session")
def go_default_chain(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    return build_go(GO, tmp_path_factory)


def client_command(name: str, ep: str, go: Path | None) -> list[str]:
    cli = ["sts", "get-caller-identity", "--endpoint-url", ep, "--query", "Arn", "--output", "text"]
    return {
        "boto3": [sys.executable, "-c", BOTO3],
        "awscli-v1": [str(Path(sys.executable).parent / "aws"), *cli],
        "awscli-v2": ["/usr/bin/aws", *cli],
        "js-sdk-v3": ["node", "-e", JS],
        "go-sdk-v2": [str(go)],
    }[name]


@pytest.fixture
def endpoint_agent(
    aws: StandIn, start_agent: Callable[..., AgentProcess], monkeypatch: pytest.MonkeyPatch
) -> Iterator[AgentProcess]:
    arn = make_assumable_role(aws)
    agent = start_agent(
        {
            "ec2": iam_user_role(),
            "deploy": f'credential_type = "assumed_role"\nrole_arns = ["{arn}"]\n',
        }
    )
    monkeypatch.setenv("EP", aws.endpoint)
    monkeypatch.setenv("NODE_PATH", str(NODE_DIR / "node_modules"))
    yield agent


def exec_(
    agent: AgentProcess, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dyncreds", "exec", *args],
        env=dict(agent.env, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=NODE_DIR if NODE_DIR.is_dir() else None,
    )


@pytest.mark.parametrize("role", ["ec2", "deploy"])
@pytest.mark.parametrize("name", ["boto3", "awscli-v1", "awscli-v2", "js-sdk-v3", "go-sdk-v2"])
def test_every_sdk_resolves_the_lease_through_exec(
    name: str, role: str, aws: StandIn, endpoint_agent: AgentProcess, go_default_chain: Path | None
) -> None:
    ok, reason = available(name, go_default_chain)
    need(ok, reason)
    # Static keys in the caller's environment must not reach the child.
    decoy = {"AWS_ACCESS_KEY_ID": "AKIADECOY", "AWS_SECRET_ACCESS_KEY": "x", "AWS_PROFILE": "y"}
    result = exec_(
        endpoint_agent, role, "--", *client_command(name, aws.endpoint, go_default_chain),
        env=decoy,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    arn = result.stdout.strip()
    if role == "ec2":
        (user,) = temp_users(aws)
        assert arn == f"arn:aws:iam::123456789012:user/{user}"
    else:
        assert arn.startswith("arn:aws:sts::123456789012:assumed-role/deploy/dyncreds-")


def test_exec_passes_the_exit_status_and_signals(endpoint_agent: AgentProcess) -> None:
    assert exec_(endpoint_agent, "ec2", "--", "sh", "-c", "exit 7").returncode == 7
    killed = exec_(endpoint_agent, "ec2", "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + signal.SIGTERM
    process = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "exec", "ec2", "--", "sleep", "60"],
        env=endpoint_agent.env,
        stdin=subprocess.DEVNULL,
    )
    wait_for(
        lambda: subprocess.run(["pgrep", "-P", str(process.pid), "sleep"]).returncode == 0,
        message="the child started",
    )
    process.send_signal(signal.SIGTERM)  # forwarded to the child
    assert process.wait(timeout=20) == 128 + signal.SIGTERM


def test_exec_with_a_token_file_and_the_env_fallback(endpoint_agent: AgentProcess) -> None:
    shown = exec_(
        endpoint_agent, "ec2", "--token-file", "--", sys.executable, "-c",
        "import os, stat; p = os.environ['AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE'];"
        "print(oct(stat.S_IMODE(os.stat(p).st_mode)), open(p).read().endswith(chr(10)),"
        "'AWS_CONTAINER_AUTHORIZATION_TOKEN' in os.environ)",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["0o600", "False", "False"]
    static = exec_(endpoint_agent, "ec2", "--env", "--", "sh", "-c", 'echo "$AWS_ACCESS_KEY_ID"')
    assert static.returncode == 0 and static.stdout.startswith("AKIA")


LONG_LIVED = """
import json, os, sys, time
import boto3, botocore.credentials, botocore.exceptions

# botocore's refresh windows scaled down 60x, like the leases: 1 h becomes 60 s.
botocore.credentials.RefreshableCredentials._advisory_refresh_timeout = 15
botocore.credentials.RefreshableCredentials._mandatory_refresh_timeout = 10
static = [k for k in os.environ if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
ep = os.environ["EP"]
sts = boto3.client("sts", endpoint_url=ep)
calls = failures = 0
identities = set()
errors = []
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        identities.add(sts.get_caller_identity()["Arn"])
        calls += 1
    except botocore.exceptions.ClientError as exc:
        failures += 1
        errors.append(exc.response["Error"]["Code"])
    time.sleep(0.2)
print(json.dumps({"calls": calls, "failures": failures, "identities": sorted(identities),
                  "errors": errors[:5], "static": static}))
"""


def test_long_running_child_crosses_lease_replacements(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"ec2": iam_user_role(extra='ttl = "60s"\nmax_ttl = "60s"\n')})
    duration = 110.0  # as the shim test: >= 2 replacements seen by the client
    result = exec_(
        agent, "ec2", "--", sys.executable, "-c", LONG_LIVED, str(duration),
        env={"EP": aws.endpoint}, timeout=duration + 60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["failures"] == 0, stats
    assert stats["static"] == []
    assert stats["calls"] > 200
    assert len(stats["identities"]) >= 3, stats  # two replacements at least


# --------------------------------------------------------------------------- serve


class Served:
    def __init__(self, agent: AgentProcess, *extra: str, prefix: tuple[str, ...] = ()):
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "dyncreds", "serve", "ec2", *extra],
            env=agent.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.lines: dict[str, str] = {}
        first = self.process.stdout.readline()
        assert first.startswith("export "), (
            self.process.stderr.read() if self.process.stderr else ""
        )
        self._take(first)
        if "--imds" not in extra:
            self._take(self.process.stdout.readline())
        url = next(v for k, v in self.lines.items() if k.endswith(("_URI", "_ENDPOINT")))
        rest = url.split("//", 1)[1]
        self.host, port_path = rest.split(":", 1)
        self.port = int(port_path.split("/", 1)[0])
        self.path = "/" + port_path.split("/", 1)[1] if "/" in port_path else "/"

    def _take(self, line: str) -> None:
        key, _, value = line.strip().removeprefix("export ").partition("=")
        self.lines[key] = value

    def get(
        self, path: str | None = None, method: str = "GET", **headers: str
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path or self.path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=20)
        return err


@pytest.fixture
def served(endpoint_agent: AgentProcess) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def start(*extra: str, prefix: tuple[str, ...] = ()) -> Served:
        made.append(Served(endpoint_agent, *extra, prefix=prefix))
        return made[-1]

    yield start
    for s in made:
        if s.process.poll() is None:
            s.process.kill()


def test_endpoint_refuses_what_it_must(
    endpoint_agent: AgentProcess, served: Callable[..., Served]
) -> None:
    s = served()
    token = s.lines["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert len(token) >= 32  # >= 128 bits, url-safe
    status, body = s.get(Authorization=token)
    assert status == 200 and json.loads(body)["AccessKeyId"].startswith("AKIA")
    assert s.get()[0] == 401
    assert s.get(Authorization=token + "x")[0] == 403
    assert s.get(Authorization=token, Host="evil.example:80")[0] == 403
    assert s.get(Authorization=token, **{"X-Big": "a" * 20000})[0] == 431
    assert s.get("/role/other", Authorization=token)[0] == 404
    # A slow client holding a half-sent request does not stop the others.
    slow = socket.create_connection((s.host, s.port))
    slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    assert s.get(Authorization=token)[0] == 200
    assert time.monotonic() - started < 2
    slow.close()
    err = s.stop()
    assert token not in err and "SecretAccessKey" not in err


def test_endpoint_reports_agent_errors_as_json(
    endpoint_agent: AgentProcess, served: Callable[..., Served]
) -> None:
    s = served()
    token = s.lines["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    endpoint_agent.stop()
    status, body = s.get(Authorization=token)
    assert status == 503 and json.loads(body)["code"] == "AgentNotRunning"


def test_token_dies_with_exec(endpoint_agent: AgentProcess, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    result = exec_(
        endpoint_agent, "ec2", "--", "sh", "-c",
        f'echo "$AWS_CONTAINER_CREDENTIALS_FULL_URI" > {seen}',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    url = seen.read_text().strip()
    port = int(url.split(":")[2].split("/")[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_imds_serves_boto3_and_refuses_what_imdsv2_refuses(
    endpoint_agent: AgentProcess, served: Callable[..., Served], aws: StandIn
) -> None:
    s = served("--imds")
    env = {k: v for k, v in os.environ.items() if k != "AWS_EC2_METADATA_DISABLED"}
    env.update(
        AWS_EC2_METADATA_SERVICE_ENDPOINT=s.lines["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
        AWS_DEFAULT_REGION="us-east-1",
    )
    program = (
        "import boto3, os;"
        "s = boto3.Session();"
        "print(s.get_credentials().method,"
        " s.client('sts', endpoint_url=os.environ['EP']).get_caller_identity()['Arn'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    method, arn = result.stdout.split()
    assert method == "iam-role"
    (user,) = temp_users(aws)
    assert arn.endswith(f":user/{user}")
    creds = "/latest/meta-data/iam/security-credentials/"
    assert s.get(creds)[0] == 401  # no session token
    status, token = s.get(
        "/latest/api/token", "PUT", **{"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    assert status == 200
    assert s.get(creds, **{"X-aws-ec2-metadata-token": token.decode()}) == (200, b"ec2")
    forwarded = {"X-aws-ec2-metadata-token": token.decode(), "X-Forwarded-For": "10.0.0.1"}
    assert s.get(creds + "ec2", **forwarded)[0] == 403
    assert (
        s.get("/latest/api/token", "PUT", **{"X-aws-ec2-metadata-token-ttl-seconds": "0"})[0] == 400
    )
