"""A new user's first hour, on the command line: configure root keeps comments
and never half-writes, conflicting flags are refused, renew says what happens to
the old keys, reloads are claimed only for the right agent, and status --watch
lives through an agent restart."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, iam_user_role, temp_users, wait_for
from tests.e2e.test_seed_flow import dyncreds

pytestmark = pytest.mark.e2e

STS_ROLE = 'credential_type = "session_token"\n'


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.fixture
def fresh(aws: StandIn, short_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNCREDS_")}
    env.update(
        DYNCREDS_CONFIG_DIR=str(short_dir / "config"),
        DYNCREDS_STATE_DIR=str(short_dir / "state"),
        DYNCREDS_SOCKET=str(short_dir / "agent.sock"),
    )
    return env


def configure(
    env: dict[str, str], aws: StandIn, *extra: str, secret: str | None = None
) -> subprocess.CompletedProcess[str]:
    keys = aws.admin_keys
    return dyncreds(
        env,
        "configure",
        "root",
        "--access-key-id",
        keys["AccessKeyId"],
        "--secret-stdin",
        "--iam-endpoint",
        aws.endpoint,
        "--sts-endpoint",
        aws.endpoint,
        *extra,
        stdin=(secret or keys["SecretAccessKey"]) + "\n",
    )


def test_configure_root_keeps_comments_and_checks_the_key(
    aws: StandIn, fresh: dict[str, str]
) -> None:
    assert dyncreds(fresh, "init").returncode == 0
    config = Path(fresh["DYNCREDS_CONFIG_DIR"]) / "config.toml"
    config.write_text(config.read_text() + "\n# my own note: ask ops before changing\n")
    result = configure(fresh, aws)
    assert result.returncode == 0, result.stderr
    assert "checked: the root is arn:aws:iam::123456789012:user/vaultuser" in result.stdout
    text = config.read_text()
    assert "# my own note: ask ops before changing" in text
    assert '# min_remaining = "20m"' in text  # the starter's documentation
    assert 'credentials_file = "root-credentials.toml"' in text
    assert f'iam_endpoint = "{aws.endpoint}"' in text
    secret_leaked = aws.admin_keys["SecretAccessKey"] in result.stdout + result.stderr + text
    assert not secret_leaked


@pytest.mark.parametrize(
    "case", ["bad endpoint", "key AWS refuses", "conflicting flags", "missing secret"]
)
def test_a_failing_configure_root_changes_nothing(
    aws: StandIn, fresh: dict[str, str], case: str
) -> None:
    assert dyncreds(fresh, "init").returncode == 0
    assert configure(fresh, aws).returncode == 0
    config_dir = Path(fresh["DYNCREDS_CONFIG_DIR"])
    before = snapshot(config_dir)
    if case == "bad endpoint":
        result = configure(fresh, aws, "--iam-endpoint", "notaurl")
    elif case == "key AWS refuses":
        result = configure(fresh, aws, secret="not-the-secret")
    elif case == "conflicting flags":
        result = dyncreds(
            fresh, "configure", "root", "--profile", "x", "--access-key-id", "AKIA1",
            "--secret-stdin", stdin="s\n",
        )  # fmt: skip
    else:
        result = dyncreds(fresh, "configure", "root", "--access-key-id", "AKIA1", "--secret-stdin")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(config_dir) == before, "a failed configure root changed a file"


def test_renew_says_what_happens_to_the_old_keys(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"r": iam_user_role()})
    first = agent.request("credentials", role="r")["lease"]["id"]
    renewed = agent.cli("renew", "r").stdout
    assert f"the old keys (lease {first}) stay valid until" in renewed
    assert f"dyncreds revoke {first}" in renewed
    assert len(temp_users(aws)) == 2
    second = agent.request("credentials", role="r")["lease"]["id"]
    killed = agent.cli("renew", "r", "--revoke-old").stdout
    assert f"the old lease {second} was revoked" in killed
    wait_for(lambda: len(temp_users(aws)) == 2, message="only the first and the newest user")


def test_reload_is_claimed_only_for_the_agent_of_this_config(
    aws: StandIn, start_agent: Callable[..., AgentProcess], short_dir: Path
) -> None:
    agent = start_agent({"r": STS_ROLE})
    other = short_dir / "other-config"
    env = dict(agent.env, DYNCREDS_CONFIG_DIR=str(other))
    result = dyncreds(env, "role", "create", "web", "--type", "session_token")
    assert result.returncode == 0, result.stderr
    assert "agent reloaded" not in result.stdout
    assert f"reads {agent.config_dir}, not {other}; it was not reloaded" in result.stdout


def test_status_watch_survives_an_agent_restart(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"r": STS_ROLE})
    master, slave = pty.openpty()
    watch = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "status", "--watch", "--interval", "0.2"],
        env=agent.env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    seen = b""

    def screen_shows(text: bytes) -> bool:
        nonlocal seen
        while select.select([master], [], [], 0.1)[0]:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
        found = text in seen
        if found:
            seen = b""
        return found

    try:
        wait_for(lambda: screen_shows(b"ROLE"), timeout=20, message="the status table")
        agent.stop()
        wait_for(lambda: screen_shows(b"agent not running"), timeout=20, message="agent down")
        assert watch.poll() is None, "status --watch exited when the agent stopped"
        agent.start()
        wait_for(lambda: screen_shows(b"ROLE"), timeout=20, message="the table again")
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=10) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
        os.close(master)
