"""A root key that is never a plain file: `configure root --store keyring` against a
real Secret Service (a private D-Bus session bus and gnome-keyring-daemon, unlocked
with a test password), an agent that issues with it, and `rotate-root` writing the
new key back to the keyring."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, iam_user_role, temp_users

pytestmark = pytest.mark.e2e

REQUIRE = os.environ.get("DYNCREDS_REQUIRE_CLIENTS") == "1"
READ_ITEM = "import keyring, sys; print(keyring.get_password('dyncreds', sys.argv[1]) or '')"


@pytest.fixture
def secret_service(short_dir: Path) -> Iterator[dict[str, str]]:
    if not (shutil.which("dbus-daemon") and shutil.which("gnome-keyring-daemon")):
        if REQUIRE:
            pytest.fail("dbus and gnome-keyring are required (DYNCREDS_REQUIRE_CLIENTS=1)")
        pytest.skip("dbus or gnome-keyring not installed (bash .ci/install-clients)")
    home = short_dir / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "data"))
    bus = subprocess.run(
        ["dbus-daemon", "--session", "--fork", "--print-address=1", "--print-pid=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    address, pid = bus.stdout.split()[:2]
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    subprocess.run(
        ["gnome-keyring-daemon", "--unlock", "--components=secrets", "--daemonize"],
        env=env,
        input="test-password",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    deadline = time.monotonic() + 20
    while True:  # ready when the keyring answers
        probe = subprocess.run(
            [sys.executable, "-c", READ_ITEM, "probe"], env=env, capture_output=True, text=True
        )
        if probe.returncode == 0:
            break
        assert time.monotonic() < deadline, probe.stderr
        time.sleep(0.2)
    try:
        yield {k: env[k] for k in ("HOME", "XDG_DATA_HOME", "DBUS_SESSION_BUS_ADDRESS")}
    finally:
        # The keyring daemon exits with its bus.
        subprocess.run(["kill", pid], check=False)


def item(env: dict[str, str], name: str = "root") -> str:
    out = subprocess.run(
        [sys.executable, "-c", READ_ITEM, name],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def files_contain(directory: Path, secret: str) -> bool:
    return any(secret.encode() in p.read_bytes() for p in directory.rglob("*") if p.is_file())


def test_keyring_root_issues_rotates_and_leaves_no_plain_file(
    aws: StandIn, short_dir: Path, secret_service: dict[str, str]
) -> None:
    agent = AgentProcess(short_dir, aws, {"ec2": iam_user_role()})
    env = dict(agent.env, **secret_service)
    old = aws.admin_keys
    configured = subprocess.run(
        [
            sys.executable, "-m", "dyncreds", "configure", "root", "--store", "keyring",
            "--access-key-id", old["AccessKeyId"], "--secret-stdin",
        ],
        env=env, input=old["SecretAccessKey"] + "\n", capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert configured.returncode == 0, configured.stderr
    assert not (agent.config_dir / "root-credentials.toml").exists()  # moved, not copied
    assert 'keyring = "root"' in (agent.config_dir / "config.toml").read_text()
    assert old["AccessKeyId"] in item(secret_service)
    agent.start(secret_service)
    try:
        assert agent.request("credentials", role="ec2")["ok"]
        assert len(temp_users(aws)) == 1
        assert agent.request("status")["root"]["source"] == "keyring"
        rotated = agent.request("rotate_root")
        assert rotated["ok"], rotated
        new_id = rotated["access_key_id"]
        stored = item(secret_service)
        assert new_id in stored and old["AccessKeyId"] not in stored  # the item changed
        iam = aws.client(
            "iam",
            aws_access_key_id=new_id,
            aws_secret_access_key=stored.split('secret_access_key = "')[1].split('"')[0],
        )
        keys = iam.list_access_keys(UserName="vaultuser")["AccessKeyMetadata"]
        assert [k["AccessKeyId"] for k in keys] == [new_id]  # the old key is gone
        assert agent.request("credentials", role="ec2")["ok"]
        secret = stored.split('secret_access_key = "')[1].split('"')[0]
        for directory in (agent.config_dir, agent.state_dir):
            assert not files_contain(directory, secret)
            assert not files_contain(directory, old["SecretAccessKey"])
    finally:
        agent.stop()
