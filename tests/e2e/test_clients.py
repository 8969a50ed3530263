"""Every SDK, transparently: real clients resolve credentials through
``credential_process = <abs path>/dyncreds-shim ROLE`` in a throw-away
AWS_CONFIG_FILE, against moto's server with IAM enforcement, and see the
lease's identity.

A client that is not installed is a visible skip, or a failure when
DYNCREDS_REQUIRE_CLIENTS=1 (CI installs them all: .ci/install-clients).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import (
    SHIM,
    AgentProcess,
    iam_user_role,
    make_assumable_role,
    temp_users,
    write_aws_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.clients]

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / ".cache" / "node"
GO_PATH = "/usr/share/gocode"
REQUIRE = os.environ.get("DYNCREDS_REQUIRE_CLIENTS") == "1"


def need(available: bool, reason: str) -> None:
    if available:
        return
    if REQUIRE:
        pytest.fail(f"{reason} (DYNCREDS_REQUIRE_CLIENTS=1)")
    pytest.skip(reason)


# {options}: how the SDK finds credentials (a profile here; the default chain for
# the endpoint tests).
GO_TEMPLATE = """
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func main() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx{options})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	client := sts.NewFromConfig(cfg, sts.WithEndpointResolver(
		sts.EndpointResolverFromURL(os.Getenv("EP"))))
	out, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(*out.Arn)
}
"""

JS_PROGRAM = """
const { STSClient, GetCallerIdentityCommand } = require("@aws-sdk/client-sts");
const { fromIni } = require("@aws-sdk/credential-providers");
(async () => {
  const client = new STSClient({ region: "us-east-1", endpoint: process.env.EP,
  credentials: fromIni({ profile: process.argv[process.argv.length - 1] }) });
  const out = await client.send(new GetCallerIdentityCommand({}));
  console.log(out.Arn);
})().catch((err) => { console.error(String(err)); process.exit(1); });
"""

BOTO3_PROGRAM = """
import sys, boto3
session = boto3.Session(profile_name=sys.argv[1])
sts = session.client("sts", endpoint_url=__import__("os").environ["EP"])
print(sts.get_caller_identity()["Arn"])
"""


GO_PROGRAM = GO_TEMPLATE.replace("{options}", ", config.WithSharedConfigProfile(os.Args[1])")


@dataclass
class Client:
    name: str
    command: Callable[[str], list[str]]


def build_go(program: str, factory: pytest.TempPathFactory) -> Path | None:
    """A Go program against Debian's SDK v2 (GOPATH mode); None without Go or the SDK."""
    if shutil.which("go") is None or not Path(GO_PATH, "src/github.com/aws/aws-sdk-go-v2").is_dir():
        return None
    src = factory.mktemp("gosrc")
    (src / "main.go").write_text(program)
    binary = src / "whoami"
    env = dict(
        os.environ, GO111MODULE="off", GOPATH=GO_PATH, GOCACHE=str(factory.mktemp("gocache"))
    )
    env.pop("GOFLAGS", None)
    result = subprocess.run(
        ["go", "build", "-o", str(binary), str(src / "main.go")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return binary


@pytest.fixture(scope="session")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    return build_go(GO_PROGRAM, tmp_path_factory)


def clients(go_binary: Path | None) -> dict[str, Client]:
    aws_v1 = Path(sys.executable).parent / "aws"
    return {
        "boto3": Client("boto3", lambda p: [sys.executable, "-c", BOTO3_PROGRAM, p]),
        "awscli-v1": Client(
            "awscli-v1",
            lambda p: [
                str(aws_v1),
                "sts",
                "get-caller-identity",
                "--profile",
                p,
                "--endpoint-url",
                os.environ["EP"],
                "--query",
                "Arn",
                "--output",
                "text",
            ],
        ),
        "awscli-v2": Client(
            "awscli-v2",
            lambda p: [
                "/usr/bin/aws",
                "sts",
                "get-caller-identity",
                "--profile",
                p,
                "--endpoint-url",
                os.environ["EP"],
                "--query",
                "Arn",
                "--output",
                "text",
            ],
        ),
        "js-sdk-v3": Client("js-sdk-v3", lambda p: ["node", "-e", JS_PROGRAM, p]),
        "go-sdk-v2": Client("go-sdk-v2", lambda p: [str(go_binary), p]),
    }


def available(name: str, go_binary: Path | None) -> tuple[bool, str]:
    if name == "awscli-v1":
        return (Path(sys.executable).parent / "aws").exists(), "AWS CLI v1 (PyPI awscli) missing"
    if name == "awscli-v2":
        ok = (
            Path("/usr/bin/aws").exists()
            and "aws-cli/2"
            in subprocess.run(["/usr/bin/aws", "--version"], capture_output=True, text=True).stdout
        )
        return ok, "AWS CLI v2 (Debian awscli) not installed"
    if name == "js-sdk-v3":
        ok = (
            shutil.which("node") is not None
            and (NODE_DIR / "node_modules/@aws-sdk/credential-providers").is_dir()
        )
        return ok, f"node or @aws-sdk/credential-providers missing in {NODE_DIR}"
    if name == "go-sdk-v2":
        return go_binary is not None, "go or golang-github-aws-aws-sdk-go-v2-dev not installed"
    return True, ""


@pytest.fixture
def matrix_agent(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[AgentProcess]:
    arn = make_assumable_role(aws)
    agent = start_agent(
        {
            "ec2": iam_user_role(),
            "deploy": f'credential_type = "assumed_role"\nrole_arns = ["{arn}"]\n',
        }
    )
    config = tmp_path / "aws-config"
    # The profiles as `aws-config` writes them: the install's Python runs the shim.
    config.write_text(agent.cli("aws-config", "ec2", "deploy").stdout)
    assert " -I -S " in config.read_text()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("DYNCREDS_SOCKET", str(agent.socket))
    monkeypatch.setenv("EP", aws.endpoint)
    monkeypatch.setenv("NODE_PATH", str(NODE_DIR / "node_modules"))
    yield agent


CLIENTS = ["boto3", "awscli-v1", "awscli-v2", "js-sdk-v3", "go-sdk-v2"]


@pytest.mark.parametrize("role", ["ec2", "deploy"])
@pytest.mark.parametrize("name", CLIENTS)
def test_client_sees_the_lease_identity(
    name: str,
    role: str,
    aws: StandIn,
    matrix_agent: AgentProcess,
    go_binary: Path | None,
) -> None:
    ok, reason = available(name, go_binary)
    need(ok, reason)
    client = clients(go_binary)[name]
    result = subprocess.run(
        client.command(role),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=NODE_DIR if NODE_DIR.is_dir() else None,
    )
    assert result.returncode == 0, result.stderr
    arn = result.stdout.strip()
    if role == "ec2":
        (user,) = temp_users(aws)
        assert arn == f"arn:aws:iam::123456789012:user/{user}"
    else:
        assert arn.startswith("arn:aws:sts::123456789012:assumed-role/deploy/dyncreds-")
    lease = matrix_agent.request("status")["roles"]
    assert any(r["name"] == role and r["lease_id"] for r in lease)


# --------------------------------------------------------------------------- errors


ERRORS = {  # case -> the start of the shim line the user must see
    "not_running": "dyncreds-shim: the dyncreds agent is not running",
    "unknown_role": "dyncreds-shim: unknown role 'nope'",
    "aws_refused": "dyncreds-shim: AWS AssumeRole failed: AccessDenied",
}


@pytest.mark.parametrize("name", ["boto3", "awscli-v1", "awscli-v2"])
@pytest.mark.parametrize("case", sorted(ERRORS))
def test_shim_errors_reach_the_user(
    name: str,
    case: str,
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    go_binary: Path | None,
    short_dir: Path,
) -> None:
    ok, reason = available(name, go_binary)
    need(ok, reason)
    # A role whose trust policy does not name the root user: AWS says AccessDenied.
    aws.client("iam").create_role(
        RoleName="locked",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    agent = start_agent(
        {
            "denied": 'credential_type = "assumed_role"\n'
            'role_arns = ["arn:aws:iam::123456789012:role/locked"]\n'
        }
    )
    profile = {"not_running": "denied", "unknown_role": "nope", "aws_refused": "denied"}[case]
    config = tmp_path / "aws-config"
    write_aws_config(config, [profile])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("EP", aws.endpoint)
    monkeypatch.setenv(
        "DYNCREDS_SOCKET",
        str(short_dir / "none.sock") if case == "not_running" else str(agent.socket),
    )
    result = subprocess.run(
        clients(go_binary)[name].command(profile), capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert ERRORS[case] in result.stderr, result.stderr


def test_shim_timeout_is_bounded_and_reported_by_boto3(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    short_dir: Path,
) -> None:
    import socket
    import threading

    path = short_dir / "hang.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    config = tmp_path / "aws-config"
    write_aws_config(config, ["slow"])
    env = dict(
        os.environ,
        AWS_CONFIG_FILE=str(config),
        DYNCREDS_SOCKET=str(path),
        DYNCREDS_SHIM_TIMEOUT="1",
        EP="http://127.0.0.1:9",
    )
    result = subprocess.run(
        [sys.executable, "-c", BOTO3_PROGRAM, "slow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "dyncreds-shim: the dyncreds agent did not answer within 1s" in result.stderr
    server.close()


def test_agent_shutting_down_is_unavailable(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    import socket

    # A connection opened before SIGTERM: the agent drains it; a request sent after
    # the agent stopped taking new work is told so, not left hanging.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(agent.socket))
    assert agent.process is not None
    agent.stop()
    sock.settimeout(5)
    try:
        sock.sendall(b'{"op":"credentials","role":"ec2"}\n')
        data = sock.recv(4096)
    except OSError:
        data = b""
    sock.close()
    assert data == b"" or b'"unavailable"' in data
    result = subprocess.run([SHIM, "ec2"], env=agent.env, capture_output=True, text=True)
    assert result.returncode == 3
    assert "not running" in result.stderr


# --------------------------------------------------------------------------- exec / creds


def test_exec_and_creds_formats_with_the_aws_cli(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
    go_binary: Path | None,
) -> None:
    need(*available("awscli-v2", go_binary))
    agent = start_agent({"ec2": iam_user_role()})
    cli = [
        "/usr/bin/aws",
        "sts",
        "get-caller-identity",
        "--endpoint-url",
        aws.endpoint,
        "--query",
        "Arn",
        "--output",
        "text",
    ]
    result = agent.cli("exec", "ec2", "--", *cli)
    (user,) = temp_users(aws)
    assert result.stdout.strip().endswith(f":user/{user}")
    env_text = agent.cli("creds", "ec2", "--format", "env").stdout
    shell = subprocess.run(
        ["sh", "-c", env_text + "\n" + " ".join(cli)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        timeout=120,
    )
    assert shell.stdout.strip().endswith(f":user/{user}"), shell.stderr
    ini = tmp_path / "credentials"
    ini.write_text(agent.cli("creds", "ec2", "--format", "ini").stdout)
    from_ini = subprocess.run(
        [*cli, "--profile", "ec2"],
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "AWS_SHARED_CREDENTIALS_FILE": str(ini),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
        },
        timeout=120,
    )
    assert from_ini.stdout.strip().endswith(f":user/{user}"), from_ini.stderr


def test_aws_config_output_accepted_by_aws_cli_v2(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
    go_binary: Path | None,
) -> None:
    need(*available("awscli-v2", go_binary))
    agent = start_agent({"ec2": iam_user_role()})
    config = tmp_path / "config"
    config.write_text(agent.cli("aws-config", "ec2").stdout)
    result = subprocess.run(
        ["/usr/bin/aws", "configure", "export-credentials", "--profile", "ec2"],
        env=dict(agent.env, AWS_CONFIG_FILE=str(config)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["AccessKeyId"].startswith("AKIA")


# --------------------------------------------------------------------------- long-lived

LONG_LIVED = """
import json, os, sys, time
import boto3, botocore.credentials, botocore.exceptions

# botocore's refresh windows (15 min advisory, 10 min mandatory) scaled down 60x,
# like the leases in this test: 1 h becomes 60 s.
botocore.credentials.RefreshableCredentials._advisory_refresh_timeout = 15
botocore.credentials.RefreshableCredentials._mandatory_refresh_timeout = 10

session = boto3.Session(profile_name="ec2")
ep = os.environ["EP"]
sts = session.client("sts", endpoint_url=ep)
ec2 = session.client("ec2", endpoint_url=ep, region_name="us-east-1")
calls = failures = 0
identities = set()
errors = []
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        identities.add(sts.get_caller_identity()["Arn"])
        ec2.describe_regions()
        calls += 2
    except botocore.exceptions.ClientError as exc:
        failures += 1
        errors.append(exc.response["Error"]["Code"])
    time.sleep(0.25)
print(json.dumps({"calls": calls, "failures": failures, "identities": sorted(identities),
                  "errors": errors[:5]}))
"""


def test_long_lived_client_across_lease_replacements(
    aws: StandIn,
    start_agent: Callable[..., AgentProcess],
    tmp_path: Path,
) -> None:
    """One boto3 session calls AWS for 110 s while its role's lease (60 s, no
    extension) is replaced at least twice: no failed call, and the shim runs only
    when botocore's (scaled) refresh window asks for it."""
    agent = start_agent({"ec2": iam_user_role(extra='ttl = "60s"\nmax_ttl = "60s"\n')})
    runs = tmp_path / "shim-runs"
    counting_shim = tmp_path / "counting-shim"
    counting_shim.write_text(f'#!/bin/sh\necho run >> "{runs}"\nexec "{SHIM}" "$@"\n')
    counting_shim.chmod(0o755)
    config = tmp_path / "aws-config"
    write_aws_config(config, ["ec2"], shim=str(counting_shim))
    duration = 110.0
    env = dict(agent.env, AWS_CONFIG_FILE=str(config), EP=aws.endpoint)
    result = subprocess.run(
        [sys.executable, "-c", LONG_LIVED, str(duration)],
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["failures"] == 0, stats
    assert stats["calls"] > 200
    # At least two replacements: three or more distinct temporary users.
    assert len(stats["identities"]) >= 3, stats
    shim_runs = len(runs.read_text().splitlines())
    # Every served lease has >= 30 s left and botocore refreshes below 15 s:
    # at most one shim run per 15 s, plus the first.
    assert shim_runs <= duration / 15 + 1, shim_runs
    assert shim_runs >= len(stats["identities"])
