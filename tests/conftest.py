"""Shared fixtures: an isolated environment, moto's server with IAM enforcement,
and real agent processes.

Nothing here replaces dyncreds code: AWS is moto's server over HTTP, the agent
is ``python -m dyncreds agent`` in a child process, clients talk to it over its
real Unix socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dyncreds.aws.rootkeys import StaticKeys, write_credentials_file
from dyncreds.aws.standin import TRUST_VAULTUSER, StandIn
from dyncreds.client import Client, CliError
from dyncreds.leases import Secret

VENV_BIN = Path(sys.executable).parent
SHIM = str(VENV_BIN / "dyncreds-shim")
EC2_ONLY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's AWS or dyncreds configuration."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "DYNCREDS_")) or key in (
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "WATCHDOG_USEC",
        ):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))


# --------------------------------------------------------------------------- `make check`

# `make check` runs the tests without these marks: they start moto's server, a
# process or a real client. A test without one that does fails, so the fast loop
# stays fast and in process (the marks are checked here, not trusted).
SLOW_MARKS = ("e2e", "process", "clients")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in item.path.parts:  # tests/e2e/ is end to end, whatever the file says
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def stays_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if any(request.node.get_closest_marker(mark) for mark in SLOW_MARKS):
        return

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError(
            f"{request.node.nodeid} starts a process: mark it process (`make check` skips those)"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths are limited to ~107 bytes: pytest's tmp_path is too long."""
    path = Path(tempfile.mkdtemp(prefix="dc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- AWS


@pytest.fixture(scope="session")
def moto_server() -> Iterator[StandIn]:
    server = StandIn()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(request: pytest.FixtureRequest) -> StandIn:
    """A fresh account: reset, the admin user 'vaultuser', IAM enforcement on."""
    if not request.node.get_closest_marker("e2e"):
        pytest.fail(
            f"{request.node.nodeid} uses moto's server: mark it e2e (`make check` skips those)"
        )
    moto_server: StandIn = request.getfixturevalue("moto_server")
    moto_server.reset()
    moto_server.bootstrap()
    return moto_server


def temp_users(aws: StandIn) -> list[str]:
    users = aws.client("iam").list_users()["Users"]
    return sorted(u["UserName"] for u in users if u["UserName"] != "vaultuser")


def make_assumable_role(aws: StandIn, name: str = "deploy") -> str:
    arn: str = aws.client("iam").create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_VAULTUSER)
    )["Role"]["Arn"]
    return arn


# --------------------------------------------------------------------------- agent


class AgentProcess:
    """A real agent in a child process, configured in a temp dir."""

    def __init__(
        self, base: Path, aws: StandIn, roles: dict[str, str], agent: str = "", tables: str = ""
    ):
        self.base = base
        self.aws = aws
        self.config_dir = base / "config"
        self.state_dir = base / "state"
        self.socket = base / "agent.sock"
        self.log_path = base / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None
        (self.config_dir / "roles").mkdir(parents=True, exist_ok=True)
        creds = self.config_dir / "root-credentials.toml"
        if not creds.exists():
            write_credentials_file(
                creds,
                StaticKeys(
                    aws.admin_keys["AccessKeyId"], Secret(aws.admin_keys["SecretAccessKey"])
                ),
            )
        self.write_main(agent, tables)
        for name, text in roles.items():
            self.write_role(name, text)

    def write_main(self, agent: str = "", tables: str = "") -> None:
        """config.toml: ``agent`` lines go in [agent]; ``tables`` are appended."""
        agent = textwrap.dedent(agent)
        defaults = {"propagation_checks": "1", "log_level": '"debug"'}
        lines = [f"{k} = {v}" for k, v in defaults.items() if f"{k} =" not in agent]
        (self.config_dir / "config.toml").write_text(
            "[agent]\n"
            + "\n".join(lines)
            + "\n"
            + agent
            + textwrap.dedent(f"""
            [root]
            credentials_file = "root-credentials.toml"
            region = "us-east-1"
            iam_endpoint = "{self.aws.endpoint}"
            sts_endpoint = "{self.aws.endpoint}"
            """)
            + textwrap.dedent(tables)
        )

    def write_role(self, name: str, text: str) -> None:
        (self.config_dir / "roles" / f"{name}.toml").write_text(textwrap.dedent(text))

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DYNCREDS_CONFIG_DIR": str(self.config_dir),
                "DYNCREDS_STATE_DIR": str(self.state_dir),
                "DYNCREDS_SOCKET": str(self.socket),
            }
        )
        return env

    def start(self, extra_env: dict[str, str] | None = None) -> AgentProcess:
        env = dict(self.env, **(extra_env or {}))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dyncreds", "agent"], env=env, stdout=self._log, stderr=self._log
        )
        wait_for(self._ready, message=f"agent ready (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"agent exited with {self.process.returncode}: {self.log_path.read_text()[-3000:]}"
            )
        try:
            return bool(self.request("ping")["ok"])
        except OSError:
            return False

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        return raw_request(self.socket, {"op": op, **fields})

    def cli(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "dyncreds", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"dyncreds {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        return result

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def raw_request(path: Path, request: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """One request on its own connection, through the project's one client. An
    agent that is not there, or went away, raises ConnectionError (an OSError),
    as a bare socket would: the kill tests expect exactly that."""
    try:
        with Client(path, timeout) as client:
            return client.call(**request)
    except CliError as exc:
        raise ConnectionError(str(exc)) from None


@pytest.fixture
def start_agent(short_dir: Path, aws: StandIn) -> Iterator[Callable[..., AgentProcess]]:
    agents: list[AgentProcess] = []

    def start(
        roles: dict[str, str],
        agent_settings: str = "",
        tables: str = "",
        extra_env: dict[str, str] | None = None,
        base: Path | None = None,
    ) -> AgentProcess:
        agent = AgentProcess(base or short_dir, aws, roles, agent_settings, tables)
        agents.append(agent)
        return agent.start(extra_env)

    yield start
    for agent in agents:
        if agent.process and agent.process.poll() is None:
            agent.stop()


def iam_user_role(policy: dict[str, Any] | None = None, extra: str = "") -> str:
    return f"""\
credential_type = "iam_user"
policy_document = '''{json.dumps(policy or EC2_ONLY)}'''
{extra}
"""


def write_aws_config(path: Path, roles: list[str], shim: str = SHIM) -> None:
    path.write_text(
        "".join(
            f"[profile {role}]\ncredential_process = {shim} {role}\nregion = us-east-1\n\n"
            for role in roles
        )
    )
