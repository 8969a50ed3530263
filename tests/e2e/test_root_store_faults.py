"""Root rotation when a step fails, for the file and the keyring stores: AWS
refusing or losing a call (the fault proxy), the store failing before or after it
wrote (a file-size limit on the agent; a keyring backend that fails after writing,
through keyring's backend interface over a real Secret Service). Whatever fails,
the key the store holds is never deleted, the other one is, the error says
whether AWS or the store failed, and no temp file is left."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dyncreds.aws.rootkeys import read_credentials_file
from dyncreds.aws.standin import StandIn
from tests.conftest import iam_user_role, wait_for
from tests.e2e.conftest import Rig
from tests.e2e.test_keyring import item, secret_service  # noqa: F401 - a fixture
from tests.faultproxy import Fault

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
WRITE_ITEM = "import keyring, sys; keyring.set_password('dyncreds', 'root', sys.stdin.read())"


class Root:
    """An agent behind the fault proxy whose root key lives in ``store``."""

    def __init__(self, store: str, made: Rig, env: dict[str, str] | None):
        self.store, self.made, self.agent = store, made, made.agent
        self.env = env or {}
        self.fault_file = made.agent.base / "keyring-fault"
        if store == "keyring":
            creds = self.agent.config_dir / "root-credentials.toml"
            subprocess.run(
                [sys.executable, "-c", WRITE_ITEM],
                env=dict(os.environ, **self.env),
                input=creds.read_text(),
                text=True,
                check=True,
            )
            creds.unlink()
            config = self.agent.config_dir / "config.toml"
            config.write_text(
                config.read_text().replace(
                    'credentials_file = "root-credentials.toml"', 'keyring = "root"'
                )
            )
            self.env.update(
                PYTHON_KEYRING_BACKEND="tests.keyring_faults.FaultyKeyring",
                DYNCREDS_KEYRING_FAULT=str(self.fault_file),
                PYTHONPATH=str(REPO),
            )

    def start(self) -> None:
        self.agent.start(self.env)

    def stored(self) -> tuple[str, str]:
        if self.store == "file":
            keys = read_credentials_file(self.agent.config_dir / "root-credentials.toml")
            return keys.access_key_id, keys.secret_access_key.reveal()
        text = item(self.env)
        return (
            text.split('access_key_id = "')[1].split('"')[0],
            text.split('secret_access_key = "')[1].split('"')[0],
        )

    def aws_keys(self, aws: StandIn) -> list[str]:
        key_id, secret = self.stored()
        iam = aws.client("iam", aws_access_key_id=key_id, aws_secret_access_key=secret)
        listed = iam.list_access_keys(UserName="vaultuser")["AccessKeyMetadata"]
        return sorted(k["AccessKeyId"] for k in listed)

    def fault(self, text: str) -> None:
        self.fault_file.write_text(text)

    def rotation_records(self) -> list[str]:
        return [r[0] for r in self.made.journal_rows() if r[0].startswith("root-rotation/")]

    def settled(self, aws: StandIn, key: str) -> None:
        """The store holds ``key``, AWS has that key only, no record, and it issues."""
        wait_for(
            lambda: self.stored()[0] == key and self.aws_keys(aws) == [key],
            timeout=40,
            message=f"only {key}, held by the store (log: {self.agent.log_path})",
        )
        wait_for(lambda: not self.rotation_records(), timeout=40, message="the record forgotten")
        assert self.agent.request("credentials", role="r")["ok"]
        assert not list(self.agent.config_dir.glob(".*.tmp")), "a temp file was left"

    def rotate(self) -> subprocess.CompletedProcess[str]:
        return self.agent.cli("rotate-root", check=False, timeout=90)


@pytest.fixture(params=["file", "keyring"])
def root(request: pytest.FixtureRequest, rig: Callable[..., Rig]) -> Callable[..., Root]:
    def make(agent: str = "") -> Root:
        env = request.getfixturevalue("secret_service") if request.param == "keyring" else None
        made = rig({"r": iam_user_role()}, agent=agent)
        return Root(request.param, made, dict(env) if env else None)

    return make


def test_create_refused_by_aws_changes_nothing(aws: StandIn, root: Callable[..., Root]) -> None:
    r = root()
    r.start()
    old = r.stored()[0]
    r.made.proxy.add(Fault(frozenset({"CreateAccessKey"}), error="AccessDenied", times=1))
    result = r.rotate()
    assert result.returncode != 0
    assert "at AWS" in result.stderr and "AccessDenied" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    r.settled(aws, old)


def test_create_whose_answer_is_lost_is_not_resent_and_its_key_is_deleted(
    aws: StandIn, root: Callable[..., Root]
) -> None:
    # The case: aws_call_timeout 3s, CreateAccessKey held 6s. botocore
    # would resend it (two keys, one known); now it is sent once, and the key it
    # made when it landed is deleted once create_grace has passed.
    r = root('aws_call_timeout = "3s"\ncreate_grace = "8s"\n')
    r.start()
    old = r.stored()[0]
    r.made.proxy.add(Fault(frozenset({"CreateAccessKey"}), hold=6.0, times=1))
    result = r.rotate()
    assert result.returncode != 0
    assert "at AWS" in result.stderr and old in result.stderr, result.stderr
    assert len(r.made.proxy.calls_of("CreateAccessKey")) == 1  # not resent
    wait_for(lambda: len(r.aws_keys(aws)) == 2, timeout=15, message="the held create lands")
    r.settled(aws, old)


def test_a_new_key_that_does_not_work_is_deleted(aws: StandIn, root: Callable[..., Root]) -> None:
    r = root('propagation_timeout = "2s"\n')
    r.start()
    old = r.stored()[0]
    r.made.proxy.add(
        Fault(
            frozenset({"GetCallerIdentity"}),
            error="InvalidClientTokenId",
            only_key=lambda key: key != old,
        )
    )
    result = r.rotate()
    assert result.returncode != 0
    assert "at AWS" in result.stderr and "does not work" in result.stderr, result.stderr
    r.made.proxy.clear()
    r.settled(aws, old)


def test_old_key_not_deleted_by_aws_is_deleted_later(
    aws: StandIn, root: Callable[..., Root]
) -> None:
    r = root()
    r.start()
    old = r.stored()[0]
    r.made.proxy.add(Fault(frozenset({"DeleteAccessKey"}), error="AccessDenied", times=1))
    result = r.rotate()
    assert result.returncode != 0
    assert "AWS did not delete the old key" in result.stderr, result.stderr
    new = r.stored()[0]
    assert new != old
    r.settled(aws, new)


def test_store_write_that_fails_keeps_the_old_key_and_no_temp_file(
    aws: StandIn, root: Callable[..., Root]
) -> None:
    r = root()
    r.start()
    old = r.stored()[0]
    creds = r.agent.config_dir / "root-credentials.toml"
    if r.store == "file":  # immutable: the temp file is written, the rename fails
        subprocess.run(["chattr", "+i", str(creds)], check=True)
    else:
        r.fault("write-fails")
    try:
        result = r.rotate()
    finally:
        if r.store == "file":
            subprocess.run(["chattr", "-i", str(creds)], check=True)
    assert result.returncode != 0
    assert "failed locally" in result.stderr and old in result.stderr, result.stderr
    r.fault("")
    r.settled(aws, old)


def test_keyring_write_that_landed_but_whose_answer_was_lost_switches(
    aws: StandIn, root: Callable[..., Root]
) -> None:
    r = root()
    if r.store != "keyring":
        pytest.skip("an atomic rename has no lost answer to inject")
    r.start()
    old = r.stored()[0]
    r.fault("write-lost")
    result = r.rotate()
    r.fault("")
    assert result.returncode == 0, result.stderr
    new = r.stored()[0]
    assert new != old and new in result.stdout
    r.settled(aws, new)
    r.agent.stop()
    r.start()  # the root the store holds works after a restart
    assert r.agent.request("credentials", role="r")["ok"]
    assert r.aws_keys(aws) == [new]


def test_keyring_unreadable_after_the_write_deletes_neither_key_until_it_reads(
    aws: StandIn, root: Callable[..., Root]
) -> None:
    r = root()
    if r.store != "keyring":
        pytest.skip("the keyring's case")
    r.start()
    old = r.stored()[0]
    r.fault("write-then-unreadable")
    result = r.rotate()
    assert result.returncode != 0
    assert "failed locally" in result.stderr and "both keys are kept" in result.stderr
    # A second rotation waits for the first to be finished, and says so.
    again = r.rotate()
    assert again.returncode != 0 and "still being finished" in again.stderr, again.stderr
    r.fault("")
    new = r.stored()[0]  # the write had landed
    assert new != old
    # The reaper finishes it: keeps the key the store holds, deletes the other.
    r.settled(aws, new)
    r.agent.stop()
    r.start()
    assert r.agent.request("credentials", role="r")["ok"]


def test_two_keys_advice_names_the_key_the_store_does_not_hold(
    aws: StandIn, root: Callable[..., Root]
) -> None:
    r = root()
    r.start()
    held = r.stored()[0]
    extra = aws.client("iam").create_access_key(UserName="vaultuser")["AccessKey"]["AccessKeyId"]
    result = r.rotate()
    assert result.returncode != 0
    line = result.stderr.strip()
    assert f"delete the other one ({extra})" in line and f"holds {held}" in line, line
