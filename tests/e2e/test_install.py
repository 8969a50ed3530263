"""dyncreds installed the way the README says (pipx, from the checkout), used from
an environment without XDG_RUNTIME_DIR (ssh sessions, cron, CI): the agent and
the shim that pipx links into its bin dir find each other, and the shim prints
credentials. The shim also works from a plain venv and a `pip install --user`,
both as the profile `aws-config` writes runs it (`PYTHON -I -S -X utf8 SHIM ROLE`, no
/bin/sh hop, its compiled module) and as a command; building the wheel prints no
setuptools warning."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
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
        command = shlex.split(line.split("=", 1)[1])
        assert Path(command[0]).exists()
        # The install's own Python, -I -S -X utf8, the shim beside it: no /bin/sh hop.
        assert command[1:5] == ["-I", "-S", "-X", "utf8"]
        assert Path(command[5]).name == "dyncreds-shim"
        assert Path(command[5]).resolve() == shim.resolve()
        ran = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["AccessKeyId"]
        # pipx's link to the shim, run by hand with that Python: found through the link.
        by_hand = subprocess.run(
            [command[0], "-I", "-S", str(shim), "r"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert by_hand.returncode == 0, by_hand.stderr
        assert json.loads(by_hand.stdout)["AccessKeyId"]
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def wheel() -> Iterator[Path]:
    """The project's wheel, built as pip builds it for an install (isolated)."""
    out = Path(tempfile.mkdtemp(prefix="dc-wheel-", dir="/tmp"))
    source = out / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", ".cache", "*.egg-info", "build"),
    )
    try:
        built = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out),
             str(source)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert built.returncode == 0, built.stdout + built.stderr
        log = built.stdout + built.stderr
        assert "BuildBackendWarning" not in log and "SetuptoolsDeprecationWarning" not in log, log
        assert "absent from the `packages` configuration" not in log, log
        yield next(out.glob("dyncreds-*.whl"))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def shim_runs(python: str, shim: Path, env: dict[str, str]) -> None:
    """The shim prints credentials both ways: as aws-config's profile runs it (this
    Python, -I -S -X utf8, directly) and as a command (its /bin/sh line finds a Python)."""
    runs = [
        [python, "-I", "-S", "-X", "utf8", str(shim), "r"],
        [python, "-I", "-S", str(shim), "r"],  # the profile as 0.3's first builds wrote it
        [python, "-I", "-S", "-X", "utf8", shim.name, "r"],  # from its own directory
        [str(shim), "r"],
    ]
    for argv in runs:
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, cwd=shim.parent
        )
        assert result.returncode == 0, (argv, result.stderr)
        assert json.loads(result.stdout)["AccessKeyId"]
    probe = subprocess.run(  # the compiled module, not site's search, on the direct path
        [python, "-I", "-S", "-X", "utf8", "-v", "-X", "importtime", str(shim), "--help"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in probe.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert "site" not in imported and "os" not in imported, imported
    assert "site-packages/__pycache__/dyncreds_shim.cpython-" in probe.stderr


@pytest.mark.parametrize("how", ["venv", "user"])
def test_the_shim_of_a_venv_or_user_install(
    aws: StandIn, short_dir: Path, wheel: Path, how: str
) -> None:
    agent = AgentProcess(short_dir, aws, {"r": STS_ROLE}).start()
    try:
        env = dict(agent.env, PATH=f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin")
        env.pop("PYTHONPATH", None)
        if how == "venv":
            venv = short_dir / "venv"
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            python = str(venv / "bin" / "python")
            target: list[str] = []
            bin_dir = venv / "bin"
        else:
            python = str(sys._base_executable)  # type: ignore[attr-defined]
            env["PYTHONUSERBASE"] = str(short_dir / "userbase")
            target = ["--user", "--break-system-packages"]
            bin_dir = short_dir / "userbase" / "bin"
        installed = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "pip", "--python", python, "install", "--no-deps",
             "--no-index", *target, str(wheel)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stdout + installed.stderr
        shim_runs(python, bin_dir / "dyncreds-shim", env)
        if how == "venv":
            sdks_read_the_profile(python, bin_dir / "dyncreds-shim", env, short_dir)
    finally:
        agent.stop()


SDK_READERS = {
    # (the command, what must be there for it, the key id's place in its output)
    "boto3": [str(VENV_BIN / "python"), "-c", "import boto3; print(boto3.Session("
              "profile_name='r').get_credentials().get_frozen_credentials().access_key)"],
    "awscli-v2": ["/usr/bin/aws", "configure", "export-credentials", "--profile", "r"],
    "js-sdk-v3": ["node", "-e", "require('@aws-sdk/credential-providers').fromProcess("
                  "{profile: 'r'})().then(c => console.log(c.accessKeyId))"],
}  # fmt: skip


def sdks_read_the_profile(python: str, shim: Path, env: dict[str, str], base: Path) -> None:
    """The shim's fast path (a regular install: its module's .pyc by path, no
    teardown) as SDKs run it from the profile aws-config writes: each gets the key.
    (tests/e2e/test_clients.py runs every SDK through the test venv's editable
    install, the script's slower path.)"""
    from tests.e2e.test_clients import NODE_DIR, available, need

    config = base / "aws-config"
    config.write_text(f"[profile r]\ncredential_process = {python} -I -S -X utf8 {shim} r\n")
    env = dict(env, AWS_CONFIG_FILE=str(config), NODE_PATH=str(NODE_DIR / "node_modules"))
    for name, argv in SDK_READERS.items():
        ok, reason = available(name, None)
        need(ok, reason)
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (name, result.stderr)
        assert "AKIA" in result.stdout or "ASIA" in result.stdout, (name, result.stdout)
