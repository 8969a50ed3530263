"""What every benchmark needs: moto's server, a configured agent process, timing."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dyncreds import client
from dyncreds.aws.standin import EC2_ONLY, StandIn, agent_env, running_agent, write_config

ROOT = Path(__file__).resolve().parents[1]
IAM_ROLE = f"credential_type = \"iam_user\"\npolicy_document = '''{json.dumps(EC2_ONLY)}'''\n"
SESSION_ROLE = 'credential_type = "session_token"\n'


@dataclass
class Env:
    aws: StandIn
    base: Path
    env: dict[str, str]
    socket: Path
    pid: int

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        return client.request(self.socket, op, timeout=120, **fields)

    def temp_users(self) -> int:
        iam = self.aws.client("iam")
        users = []
        marker: dict[str, str] = {}
        while True:
            page = iam.list_users(**marker)
            users += page["Users"]
            if not page.get("IsTruncated"):
                break
            marker = {"Marker": page["Marker"]}
        return sum(1 for u in users if u["UserName"] != "vaultuser")


def fresh_install() -> Path:
    """dyncreds installed as a user installs it: a regular (non-editable) install
    in a fresh venv (an editable install's import hook costs start-up time)."""
    venv = Path(tempfile.mkdtemp(prefix="dcb-venv-", dir="/tmp"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return venv


@contextmanager
def agent(
    roles: dict[str, str], agent_settings: str = "propagation_checks = 1\n", prepare: Any = None
) -> Iterator[Env]:
    """moto + an agent process with these roles; everything stopped afterwards."""
    aws = StandIn()
    base = Path(tempfile.mkdtemp(prefix="dcb-", dir="/tmp"))
    try:
        aws.reset()  # moto's state is per process, shared by every server in it
        aws.bootstrap()
        write_config(base / "config", aws.endpoint, aws.admin_keys)
        for old in (base / "config" / "roles").glob("*.toml"):
            old.unlink()
        config = base / "config" / "config.toml"
        config.write_text(config.read_text().replace("propagation_checks = 2\n", agent_settings))
        for name, text in roles.items():
            (base / "config" / "roles" / f"{name}.toml").write_text(text)
        sock = base / "agent.sock"
        env = agent_env(base, sock)
        if prepare is not None:
            prepare(base, env)
        with running_agent(base, env, base / "agent.log") as process:
            yield Env(aws, base, env, sock, process.pid)
    finally:
        aws.stop()
        shutil.rmtree(base, ignore_errors=True)


def time_command(
    argv: list[str], runs: int, env: dict[str, str] | None = None, warmup: int = 3
) -> list[float]:
    """Wall time of each run of a command, in seconds."""
    for _ in range(warmup):
        subprocess.run(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(
    commands: list[list[str]], runs: int, env: dict[str, str] | None = None
) -> list[list[float]]:
    """Like time_command for several commands, alternating them run by run, so
    that a noisy neighbour slows all of them alike and their ratio holds."""
    for argv in commands:
        time_command(argv, 0, env, warmup=3)
    samples: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for argv, times in zip(commands, samples, strict=True):
            start = time.perf_counter()
            subprocess.run(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
            )
            times.append(time.perf_counter() - start)
    return samples


def instructions(argv: list[str], env: dict[str, str]) -> int | None:
    """Instructions one run executes, under valgrind (when installed): unlike
    times, the same on a busy machine as on an idle one."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    count = [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    run = subprocess.run(
        [*count, *argv],
        env=env,
        capture_output=True,
        text=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    return int(found.group(1).replace(",", "")) if found else None


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p10_ms": round(ordered[len(ordered) // 10] * 1000, 2),
        "p90_ms": round(ordered[(len(ordered) * 9) // 10] * 1000, 2),
        "runs": len(ordered),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"benchmark": name, **fields}), flush=True)


def cpu_note() -> str:
    return f"{os.cpu_count()} cores (shared); numbers are medians of one noisy run"
