"""Faults that used to lose track of IAM users or crash the agent: two agents on
one state dir, a CreateUser held past the issuance's deadline, a full disk,
hostile configuration files, a root key replaced or deleted underneath, a lost
journal or state dir, start-up failures. Each reproduces the observation and
checks the promise: every IAM user in moto is in the journal or gone, and none
is revoked before the expiry it announced."""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dyncreds.aws.rootkeys import StaticKeys, write_credentials_file
from dyncreds.aws.standin import StandIn
from dyncreds.leases import Secret
from dyncreds.protocol import parse_rfc3339
from tests.conftest import SHIM, AgentProcess, iam_user_role, temp_users, wait_for
from tests.e2e.conftest import Rig
from tests.faultproxy import Fault

pytestmark = pytest.mark.e2e

STS_ROLE = 'credential_type = "session_token"\n'


def journal_users(agent: AgentProcess) -> set[str]:
    """The user names the journal holds, read as another process would."""
    path = agent.state_dir / "journal.sqlite3"
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT user_name FROM leases")}
    finally:
        db.close()


# --------------------------------------------------------------------------- 1. one agent per dir


def test_second_agent_on_the_same_state_dir_is_refused(
    aws: StandIn, start_agent: Callable[..., AgentProcess], short_dir: Path
) -> None:
    first = start_agent({"r": iam_user_role()})
    assert first.request("credentials", role="r")["ok"]
    env = dict(first.env, DYNCREDS_SOCKET=str(short_dir / "second.sock"))
    second = subprocess.run(
        [sys.executable, "-m", "dyncreds", "agent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 2
    assert first.process is not None
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {first.process.pid}" in lines[0], second.stderr
    assert "Traceback" not in second.stderr
    assert not (short_dir / "second.sock").exists()
    # The first agent's lease and its journal record are untouched.
    assert first.request("credentials", role="r")["ok"]
    assert journal_users(first) == set(temp_users(aws))


# --------------------------------------------------------------------------- 2. held CreateUser


def test_create_user_held_past_issue_timeout(
    aws: StandIn, rig: Callable[..., Rig], short_dir: Path
) -> None:
    made = rig(
        {"r": iam_user_role()},
        agent='aws_call_timeout = "2s"\nissue_timeout = "4s"\ncreate_grace = "12s"\n',
    )
    agent = made.start()
    made.proxy.add(Fault(actions=frozenset({"CreateUser"}), hold=6.0))
    shim_env = dict(agent.env, DYNCREDS_SHIM_TIMEOUT="1")
    shim = subprocess.Popen(
        [SHIM, "r"], env=shim_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    started = time.time()
    answer = agent.request("credentials", role="r")
    answered = time.time()
    assert not answer["ok"] and answer["error"]["code"] == "upstream"
    assert answered - started <= 4 + 1.5, "the client waited for the cleanup"
    _, shim_err = shim.communicate(timeout=30)
    assert shim.returncode == 4 and "still issuing credentials for r" in shim_err

    # Until the grace period is over: every user in moto is in the journal.
    deadline = time.time() + 30
    seen_user = False
    while time.time() < deadline:
        users = set(temp_users(aws))
        seen_user = seen_user or bool(users)
        assert users <= journal_users(agent), "an IAM user no journal knows"
        if seen_user and not users and not journal_users(agent):
            break
        time.sleep(0.2)
    assert seen_user, "the held CreateUser never landed (the test proves nothing)"
    assert temp_users(aws) == [] and journal_users(agent) == set()
    # No attempt left the agent after it gave up.
    creates = made.proxy.calls_of("CreateUser")
    assert creates and all(c.received <= answered for c in creates)


# --------------------------------------------------------------------------- 3. full disk


def test_journal_that_cannot_be_written_does_not_crash_the_agent(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"warm": STS_ROLE, "r": iam_user_role(), "held": iam_user_role()})
    assert agent.request("credentials", role="warm")["ok"]
    assert agent.request("credentials", role="held")["ok"]
    assert agent.process is not None
    pid = agent.process.pid
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))  # no file may grow
    try:
        refused = agent.request("credentials", role="r")
        assert not refused["ok"] and refused["error"]["code"] == "unavailable"
        assert "journal" in refused["error"]["message"]
        assert agent.request("credentials", role="warm")["ok"]  # warm leases still served
        assert agent.request("credentials", role="held")["ok"]
        revoke = agent.request("revoke", role="held")
        assert not revoke["ok"] and "journal" in revoke["error"]["message"]
        assert agent.process.poll() is None
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    assert agent.request("credentials", role="r")["ok"]  # recovers when space returns
    assert agent.request("revoke", role="held")["ok"]
    assert set(temp_users(aws)) == journal_users(agent)


# --------------------------------------------------------------------------- 4-6. configuration


def test_hostile_role_files_keep_the_last_good_config(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"warm": STS_ROLE})
    assert agent.request("credentials", role="warm")["ok"]
    roles = agent.config_dir / "roles"
    fifo = roles / "fifo.toml"
    os.mkfifo(fifo)
    zero = roles / "zero.toml"
    zero.symlink_to("/dev/zero")
    (roles / "caf\udce9.toml").write_text(STS_ROLE)  # not UTF-8 on disk
    assert agent.process is not None
    agent.process.send_signal(1)  # SIGHUP
    wait_for(
        lambda: agent.request("status")["agent"]["reload_error"],
        timeout=10,
        message="SIGHUP reload rejected",
    )
    status = agent.request("status")
    assert status["ok"] and [r["name"] for r in status["roles"]] == ["warm"]
    assert "caf\\xe9.toml" in status["agent"]["reload_error"]
    assert "(+2 more; run `dyncreds check`)" in status["agent"]["reload_error"]
    started = time.monotonic()
    assert agent.request("credentials", role="warm")["ok"]
    assert time.monotonic() - started < 2, "the event loop was blocked"
    reload = agent.request("reload")
    assert not reload["ok"] and reload["error"]["code"] == "bad_request"
    check = agent.cli("check", check=False, timeout=20)
    assert check.returncode == 2
    assert "fifo.toml: cannot read: not a regular file" in check.stderr
    assert "zero.toml: cannot read: not a regular file" in check.stderr
    assert "caf\\xe9.toml" in check.stderr
    assert agent.process.poll() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the loader as another uid")
def test_unreadable_roles_dir_is_an_error_not_zero_roles(short_dir: Path) -> None:
    config_dir = short_dir / "config"
    (config_dir / "roles").mkdir(parents=True)
    (config_dir / "roles" / "a.toml").write_text(STS_ROLE)
    os.chown(short_dir, 65534, 65534)
    os.chown(config_dir, 65534, 65534)
    os.chown(config_dir / "roles", 65534, 65534)
    (config_dir / "roles").chmod(0)
    program = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "import dyncreds.config as config\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        f"    config.load(Path({str(config_dir)!r}))\n"
        "except config.ConfigError as exc:\n"
        "    print('\\n'.join(str(p) for p in exc.problems)); sys.exit(2)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot read the roles directory: Permission denied" in result.stdout


# --------------------------------------------------------------------------- 7. root underneath


def test_root_key_replaced_and_deleted_underneath(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"r": iam_user_role()})
    creds = agent.config_dir / "root-credentials.toml"
    iam = aws.client("iam")
    old = aws.admin_keys["AccessKeyId"]
    new = iam.create_access_key(UserName="vaultuser")["AccessKey"]
    write_credentials_file(creds, StaticKeys(new["AccessKeyId"], Secret(new["SecretAccessKey"])))
    aws.admin_keys = new
    iam.delete_access_key(UserName="vaultuser", AccessKeyId=old)
    assert agent.request("reload")["ok"]  # re-reads the key file
    assert agent.request("credentials", role="r")["ok"]
    assert agent.request("revoke", role="r")["ok"]

    bogus = "AKIA" + "Z" * 16
    write_credentials_file(creds, StaticKeys(bogus, Secret("x" * 40)))
    assert agent.request("reload")["ok"]
    refused = agent.request("credentials", role="r")
    assert not refused["ok"]
    message = refused["error"]["message"]
    assert f"root key {bogus} was rejected by AWS" in message
    assert "dyncreds configure root" in message
    status = agent.request("status")
    assert bogus in status["root"]["error"]
    assert status["retiring"] == [], "a user that was never created is tracked forever"

    creds.unlink()
    reload = agent.request("reload")
    assert not reload["ok"] and "dyncreds configure root" in reload["error"]["message"]
    assert "previous one stays" in reload["error"]["message"]
    assert temp_users(aws) == []


# --------------------------------------------------------------------------- 8. lost journal


def test_a_lost_journal_keeps_the_agent_id_and_the_announced_expiry(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    role = iam_user_role(extra='ttl = "1m"\nmax_ttl = "1m"\n')
    agent = start_agent({"r": role}, agent_settings='orphan_min_age = "0s"\n')
    assert agent.request("credentials", role="r")["ok"]
    [user] = temp_users(aws)
    tags = {t["Key"]: t["Value"] for t in aws.client("iam").list_user_tags(UserName=user)["Tags"]}
    expires = parse_rfc3339(tags["dyncreds:expires"])
    agent.stop()
    for path in sorted(agent.state_dir.rglob("*"), reverse=True):
        if path.name != "agent-id":  # the journal is lost; the (random) id is kept
            path.rmdir() if path.is_dir() else path.unlink()
    agent.start()
    wait_for(
        lambda: agent.request("status")["retiring"],
        timeout=20,
        message="the orphan adopted by the restarted agent",
    )
    [orphan] = agent.request("status")["retiring"]
    assert orphan["user_name"] == user
    assert parse_rfc3339(orphan["revoke_at"]) == expires
    while time.time() < expires - 2:  # never revoked before the expiry it announced
        assert temp_users(aws) == [user]
        time.sleep(0.5)
    wait_for(lambda: temp_users(aws) == [], timeout=45, message="revoked at its expiry")
    assert time.time() >= expires


# --------------------------------------------------------------------------- 9. start-up


def test_corrupt_journal_is_moved_aside_and_the_agent_starts(aws: StandIn, short_dir: Path) -> None:
    agent = AgentProcess(short_dir, aws, {"warm": STS_ROLE})
    agent.state_dir.mkdir(mode=0o700)
    (agent.state_dir / "journal.sqlite3").write_bytes(b"this is not a database" * 100)
    agent.start()
    try:
        assert agent.request("credentials", role="warm")["ok"]
        assert list(agent.state_dir.glob("journal.sqlite3.corrupt-*"))
        assert "moved aside" in agent.log()
    finally:
        agent.stop()


@pytest.mark.parametrize("problem", ["state dir is a file", "config dir is a file"])
def test_start_up_failures_are_one_line(aws: StandIn, short_dir: Path, problem: str) -> None:
    agent = AgentProcess(short_dir, aws, {"warm": STS_ROLE})
    env: dict[str, Any] = dict(agent.env)
    if problem == "state dir is a file":
        agent.state_dir.write_text("")
    else:
        env["DYNCREDS_CONFIG_DIR"] = str(agent.config_dir / "config.toml")
    result = subprocess.run(
        [sys.executable, "-m", "dyncreds", "agent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("dyncreds agent: ")


# --------------------------------------------------------------------------- 10. shim


def test_shim_socket_path_too_long_is_not_running(tmp_path: Path) -> None:
    path = "/tmp/" + "x" * 120 + "/agent.sock"
    result = subprocess.run(
        [SHIM, "r"],
        env=dict(os.environ, DYNCREDS_SOCKET=path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "longer than Unix sockets allow" in result.stderr


# --------------------------------------------------------------------------- root stores


def test_systemd_credential_root_serves_and_refuses_rotation(aws: StandIn, short_dir: Path) -> None:
    agent = AgentProcess(short_dir, aws, {"r": iam_user_role()})
    creds_dir = short_dir / "credentials"
    creds_dir.mkdir(mode=0o700)
    (agent.config_dir / "root-credentials.toml").rename(creds_dir / "dyncreds-root")
    config = agent.config_dir / "config.toml"
    config.write_text(
        config.read_text().replace(
            'credentials_file = "root-credentials.toml"', 'systemd_credential = "dyncreds-root"'
        )
    )
    agent.start({"CREDENTIALS_DIRECTORY": str(creds_dir)})
    try:
        assert agent.request("credentials", role="r")["ok"]
        status = agent.request("status")
        assert status["root"]["source"] == "systemd_credential"
        assert status["root"]["warning"] is None
        refused = agent.request("rotate_root")
        assert not refused["ok"] and "read-only" in refused["error"]["message"]
        assert "systemd-creds encrypt" in refused["error"]["message"]
    finally:
        agent.stop()
    plain = AgentProcess(short_dir / "plain", aws, {})
    check = plain.cli("check")
    assert "warning: the root key is in a plain file" in check.stderr
