"""dyncreds installed the way the README says (pipx, from the checkout), used from
an environment without XDG_RUNTIME_DIR (ssh sessions, cron, CI): the agent and
the shim that pipx links into its bin dir find each other, and the shim prints
credentials."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dyncreds.standin import StandIn
from tests.conftest import VENV_BIN, AgentProcess, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STS_ROLE = 'credential_type = "session_token"\n'


@pytest.fixture
def pipx_install(short_dir: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    pipx = VENV_BIN / "pipx"
    if not pipx.exists():
        pytest.skip("pipx is not installed in the test environment (pip install '.[test]')")
    bin_dir = short_dir / "bin"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("XDG_RUNTIME_DIR", "VIRTUAL_ENV", "PYTHONPATH")
    }
    env.update(
        PIPX_HOME=str(short_dir / "pipx"),
        PIPX_BIN_DIR=str(bin_dir),
        PIPX_MAN_DIR=str(short_dir / "man"),
        # Only the system's own directories: nothing from the test's venv.
        PATH=f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        TMPDIR=str(short_dir),  # the runtime fallback lands here, not in the shared /tmp
    )
    source = short_dir / "src"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", ".cache", "*.egg-info")
    )
    result = subprocess.run(
        [str(pipx), "install", "--python", sys.executable, str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    yield bin_dir, env


def test_pipx_install_serves_the_shim_without_xdg_runtime_dir(
    aws: StandIn, short_dir: Path, pipx_install: tuple[Path, dict[str, str]]
) -> None:
    bin_dir, env = pipx_install
    shim = bin_dir / "dyncreds-shim"
    assert shim.is_symlink(), "pipx links its apps into its bin dir"
    agent = AgentProcess(short_dir / "a", aws, {"r": STS_ROLE})
    env.update(DYNCREDS_CONFIG_DIR=str(agent.config_dir), DYNCREDS_STATE_DIR=str(agent.state_dir))
    log = (short_dir / "agent.log").open("wb")
    process = subprocess.Popen(
        [str(bin_dir / "dyncreds"), "agent"], env=env, stdout=log, stderr=log
    )
    try:
        expected = short_dir / f"runtime-{os.geteuid()}" / "dyncreds" / "agent.sock"
        if Path(f"/run/user/{os.geteuid()}").is_dir():
            expected = Path(f"/run/user/{os.geteuid()}/dyncreds/agent.sock")
        wait_for(expected.exists, timeout=30, message=f"agent socket at {expected}")
        result = subprocess.run(
            [str(shim), "r"], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        body = json.loads(result.stdout)
        assert body["Version"] == 1 and body["AccessKeyId"]
        # aws-config names a shim that exists, whatever is on PATH.
        printed = subprocess.run(
            [str(bin_dir / "dyncreds"), "aws-config", "r"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert printed.returncode == 0, printed.stderr
        line = next(x for x in printed.stdout.splitlines() if x.startswith("credential_process"))
        assert Path(line.split("=", 1)[1].split()[0]).exists()
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
