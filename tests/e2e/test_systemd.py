"""systemd integration: unit files, socket activation, sd_notify, watchdog."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import SHIM, AgentProcess, iam_user_role, wait_for

pytestmark = pytest.mark.e2e
UNITS = Path(__file__).resolve().parents[2] / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_verify(short_dir: Path) -> None:
    # Installed where the README says: ~/.config/systemd/user, with the agent at
    # ~/.local/bin/dyncreds (pip install --user).
    home = short_dir / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "dyncreds").symlink_to(Path(sys.executable).parent / "dyncreds")
    units = home / ".config" / "systemd" / "user"
    units.mkdir(parents=True)
    for unit in ("dyncreds-agent.service", "dyncreds-agent.socket"):
        shutil.copy(UNITS / unit, units / unit)
    runtime = short_dir / "run"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [
            "systemd-analyze",
            "--user",
            "verify",
            str(units / "dyncreds-agent.socket"),
            str(units / "dyncreds-agent.service"),
        ],
        env=dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == ""
    service = (UNITS / "dyncreds-agent.service").read_text()
    for directive in ("Type=notify", "Restart=on-failure", "UMask=0077", "LimitCORE=0"):
        assert directive in service
    socket_unit = (UNITS / "dyncreds-agent.socket").read_text()
    assert "SocketMode=0600" in socket_unit and "DirectoryMode=0700" in socket_unit


class NotifySocket:
    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                return [m for _, m in self.messages]

    def wait(self, needle: str, timeout: float = 20) -> str:
        def seen() -> str | None:
            return next((m for m in self.drain() if needle in m), None)

        return str(wait_for(seen, timeout=timeout, message=f"sd_notify {needle!r}"))


def test_notify_ready_status_reload_stopping_and_watchdog(
    aws: StandIn,
    short_dir: Path,
) -> None:
    notify = NotifySocket(short_dir / "notify")
    agent = AgentProcess(short_dir, aws, {"ec2": iam_user_role()})
    agent.start({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"})
    assert agent.process is not None
    ready = notify.wait("READY=1")
    assert f"MAINPID={agent.process.pid}" in ready
    assert "STATUS=1 roles" in ready
    start = time.monotonic()
    wait_for(
        lambda: len([m for m in notify.drain() if m == "WATCHDOG=1"]) >= 8,
        timeout=10,
        message="watchdog pings",
    )
    pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
    # Half the watchdog interval: ~10 pings a second, not a flood.
    assert len(pings) / (time.monotonic() - start + 0.2) < 25
    agent.process.send_signal(signal.SIGHUP)
    notify.wait("RELOADING=1")
    assert agent.stop() == 0
    notify.wait("STOPPING=1")


def test_notify_status_says_locked_until_the_unlock(aws: StandIn, short_dir: Path) -> None:
    aws.enforce_iam(
        unauthenticated_requests=1_000_000_000
    )  # moto's MFA sessions: see test_root_lock
    notify = NotifySocket(short_dir / "notify")
    agent = AgentProcess(
        short_dir,
        aws,
        {"ec2": iam_user_role()},
        tables='mfa_serial = "arn:aws:iam::123456789012:mfa/vaultuser"\n',
    )
    agent.start({"NOTIFY_SOCKET": str(notify.path)})
    assert "STATUS=locked (run `dyncreds unlock`)" in notify.wait("READY=1")
    agent.cli("unlock", "--code", "123456")
    unlocked = notify.wait("STATUS=1 roles")
    assert "locked" not in unlocked
    agent.cli("lock")
    notify.wait("STATUS=locked by `dyncreds lock`")
    assert agent.stop() == 0


def test_socket_activation(aws: StandIn, short_dir: Path) -> None:
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate not installed")
    agent = AgentProcess(short_dir, aws, {"ec2": iam_user_role()})
    path = short_dir / "act" / "agent.sock"
    path.parent.mkdir(mode=0o700)
    env = dict(agent.env, DYNCREDS_SOCKET=str(short_dir / "elsewhere.sock"))
    # systemd-socket-activate passes only the variables named with -E.
    passed = [
        f"-E{key}"
        for key in (
            "DYNCREDS_CONFIG_DIR",
            "DYNCREDS_STATE_DIR",
            "DYNCREDS_SOCKET",
            "XDG_RUNTIME_DIR",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "PATH",
        )
    ]
    with open(agent.log_path, "ab") as log:
        process = subprocess.Popen(
            [
                "systemd-socket-activate",
                "-l",
                str(path),
                "--fdname=agent",
                *passed,
                sys.executable,
                "-m",
                "dyncreds",
                "agent",
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        wait_for(path.exists, message="activation socket")
        # The shim connects to the passed socket; the agent starts on that request.
        result = subprocess.run(
            [SHIM, "ec2"], env=dict(env, DYNCREDS_SOCKET=str(path)), capture_output=True, timeout=60
        )
        assert result.returncode == 0, result.stderr + agent.log_path.read_bytes()[-2000:]
        assert b'"AccessKeyId"' in result.stdout
        assert not (short_dir / "elsewhere.sock").exists()  # it did not bind its own
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0


def test_json_logs_one_event_per_line(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"ec2": iam_user_role()}, agent_settings='log_format = "json"\n')
    assert agent.request("credentials", role="ec2")["ok"]
    agent.stop()
    lines = [json.loads(line) for line in agent.log().splitlines() if line.strip()]
    issued = [entry for entry in lines if entry.get("event") == "lease.issued"]
    assert len(issued) == 1
    assert issued[0]["role"] == "ec2" and issued[0]["level"] == "info"
    assert issued[0]["key"].startswith("AKIA")
    assert {entry["event"] for entry in lines} >= {
        "agent.start",
        "agent.ready",
        "agent.stopping",
        "agent.stopped",
    }
