"""A static role serves across any number of restarts: its current key is sealed
at rest (aws/staticstore.py) and served again after a restart instead of a new
key taking one of IAM's two slots. Ten restarts and three rotations within one
rotation period: the role serves every time, the user never holds more than two
keys, every key is in the journal, none is deleted before its announced expiry,
and a rotation that would need a third key refuses in one line naming when a
slot frees and the `revoke LEASE` that frees it now."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
from dyncreds.protocol import parse_rfc3339
from tests.conftest import AgentProcess
from tests.e2e.test_keyring import item
from tests.e2e.test_keyring import secret_service as secret_service  # a fixture
from tests.e2e.test_root_store_faults import WRITE_ITEM
from tests.e2e.test_static_user import ROLE, keys_of, make_user, works

pytestmark = pytest.mark.e2e


def journal(agent: AgentProcess) -> dict[str, tuple[str, float]]:
    """Journaled keys: key id -> (lease id, announced expiry)."""
    db = sqlite3.connect(agent.state_dir / "journal.sqlite3")
    try:
        rows = db.execute("SELECT lease_id, access_key_id, revoke_at FROM leases")
        return {k: (lease, at) for lease, k, at in rows if k}
    finally:
        db.close()


def test_ten_restarts_and_three_rotations_in_one_period(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    make_user(aws)
    agent = start_agent({"legacy": ROLE})
    announced: dict[str, float] = {}  # every key ever seen -> its announced expiry
    current = ""
    rotations = 0

    def check() -> str:
        served = agent.request("credentials", role="legacy")
        assert served["ok"], served
        creds = served["credentials"]
        assert works(aws, creds)
        keys, known = keys_of(aws), journal(agent)
        assert len(keys) <= 2, keys
        assert set(keys) <= set(known), (keys, known)  # every key journaled
        for key, (_, at) in known.items():
            announced.setdefault(key, at)
        for key, at in announced.items():  # none deleted before its announced expiry
            assert key in keys or time.time() >= at, (key, at)
        return str(creds["AccessKeyId"])

    current = check()
    for restart in range(10):
        if restart in (2, 5, 8):
            result = agent.cli("rotate", "legacy", check=False)
            rotations += 1
            if rotations == 1:
                assert result.returncode == 0, result.stderr
                new = check()
                assert new != current
                current = new
            else:  # both slots are dyncreds' own: refused, saying when and how
                assert result.returncode != 0
                line = result.stderr.strip()
                assert "\n" not in line and "third" in line, line
                old_lease = next(lease for k, (lease, _) in journal(agent).items() if k != current)
                assert f"dyncreds revoke {old_lease}" in line, line
                when = line.split("announced expiry ")[1].split(",")[0]
                assert parse_rfc3339(when) > time.time()
                assert check() == current
        agent.stop()
        agent.start()
        assert check() == current, f"restart {restart + 1} made a new key"
    assert rotations == 3
    assert len(announced) == 2  # the first key and the one rotation that could happen
    sealed = (agent.state_dir / "static" / "legacy.sealed").read_text()
    assert json.loads(sealed)["access_key_id"] == current
    assert "SecretAccessKey" not in sealed
    creds = agent.request("credentials", role="legacy")["credentials"]
    for path in agent.state_dir.rglob("*"):
        if path.is_file():
            assert creds["SecretAccessKey"].encode() not in path.read_bytes(), path


@pytest.mark.parametrize("store", ["keyring", "systemd"])
def test_the_seal_key_is_held_where_the_root_is(
    store: str, aws: StandIn, short_dir: Path, request: pytest.FixtureRequest
) -> None:
    make_user(aws)
    agent = AgentProcess(short_dir, aws, {"legacy": ROLE})
    creds = agent.config_dir / "root-credentials.toml"
    config = agent.config_dir / "config.toml"
    env: dict[str, str] = {}
    if store == "keyring":
        env = dict(request.getfixturevalue("secret_service"))
        subprocess.run(
            [sys.executable, "-c", WRITE_ITEM],
            env=dict(os.environ, **env),
            input=creds.read_text(),
            text=True,
            check=True,
        )
        line = 'keyring = "root"'
    else:
        credentials = short_dir / "credentials"
        credentials.mkdir()
        (credentials / "root").write_text(creds.read_text())
        env = {"CREDENTIALS_DIRECTORY": str(credentials)}
        line = 'systemd_credential = "root"'
    creds.unlink()
    config.write_text(
        config.read_text().replace('credentials_file = "root-credentials.toml"', line)
    )
    agent.start(env)
    try:
        first = agent.request("credentials", role="legacy")["credentials"]["AccessKeyId"]
        for _ in range(2):
            agent.stop()
            agent.start(env)
            assert agent.request("credentials", role="legacy")["credentials"]["AccessKeyId"] == (
                first
            )
        assert keys_of(aws) == [first]
        assert not (agent.state_dir / "seal.key").exists()  # held by the root's store
        if store == "keyring":
            assert item(env, "root.seal")
    finally:
        agent.stop()


def test_a_deleted_keys_sealed_copy_goes_with_it(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    """A role removed from the configuration: once its key is deleted (here by
    `revoke`, else by the reaper at its announced expiry) nothing of it stays at rest."""
    make_user(aws)
    agent = start_agent({"legacy": ROLE})
    lease = agent.request("credentials", role="legacy")["lease"]["id"]
    sealed = agent.state_dir / "static" / "legacy.sealed"
    assert json.loads(sealed.read_text())["lease_id"] == lease
    (agent.config_dir / "roles" / "legacy.toml").unlink()
    assert agent.request("reload")["ok"]
    out = agent.cli("revoke", lease).stdout
    assert "key deleted" in out, out
    assert keys_of(aws) == []
    assert not sealed.exists()
