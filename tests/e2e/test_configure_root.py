"""`configure root` changes the root without the secret typed again: the key moves
between a file and a real Secret Service (old place emptied, the keyring item
deleted), settings change and clear without a key and without a terminal, and a
refused run changes nothing - neither the files nor the keyring."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
from tests.e2e.test_cli_ux import snapshot
from tests.e2e.test_keyring import item, secret_service  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

MFA = "arn:aws:iam::123456789012:mfa/vaultuser"


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI with no terminal at all: stdin is /dev/null unless given."""
    return subprocess.run(
        [sys.executable, "-m", "dyncreds", *args],
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_key_moves_between_stores_and_settings_change_without_it(
    aws: StandIn,
    short_dir: Path,
    secret_service: dict[str, str],  # noqa: F811
) -> None:
    config_dir = short_dir / "config"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNCREDS_")}
    env.update(
        secret_service,
        DYNCREDS_CONFIG_DIR=str(config_dir),
        DYNCREDS_STATE_DIR=str(short_dir / "state"),
        DYNCREDS_SOCKET=str(short_dir / "agent.sock"),
    )
    keys = aws.admin_keys
    endpoints = ("--iam-endpoint", aws.endpoint, "--sts-endpoint", aws.endpoint)
    first = run(
        env, "configure", "root", "--access-key-id", keys["AccessKeyId"], "--secret-stdin",
        *endpoints, stdin=keys["SecretAccessKey"] + "\n",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    key_file = config_dir / "root-credentials.toml"
    config = config_dir / "config.toml"
    outputs = [first]

    # To the keyring: no terminal, no key typed; checked with AWS; the file is gone.
    moved = run(env, "configure", "root", "--store", "keyring")
    outputs.append(moved)
    assert moved.returncode == 0, moved.stderr
    assert "checked: the root is arn:aws:iam::123456789012:user/vaultuser" in moved.stdout
    assert not key_file.exists()
    root = tomllib.loads(config.read_text())["root"]
    assert root["keyring"] == "root" and "credentials_file" not in root
    assert keys["SecretAccessKey"] in item(secret_service)

    # Settings without the key; "" clears one.
    set_ = run(env, "configure", "root", "--mfa-serial", MFA, "--rotate-every", "30d")
    outputs.append(set_)
    assert set_.returncode == 0, set_.stderr
    text = config.read_text()
    assert f'mfa_serial = "{MFA}"' in text and 'rotate_every = "30d"' in text
    cleared = run(env, "configure", "root", "--mfa-serial", "", "--sts-endpoint", "")
    outputs.append(cleared)
    assert cleared.returncode == 0, cleared.stderr
    root = tomllib.loads(config.read_text())["root"]
    assert "mfa_serial" not in root and "sts_endpoint" not in root
    assert root["rotate_every"] == "30d" and root["iam_endpoint"] == aws.endpoint
    assert keys["SecretAccessKey"] in item(secret_service)  # untouched

    # Refused runs change nothing, in the files or the keyring.
    before = snapshot(config_dir)
    for bad in (("--region", "nowhere"), ("--store", "file", "--unlock-for", "1s")):
        refused = run(env, "configure", "root", *bad)
        outputs.append(refused)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "nothing was written" in refused.stderr
        assert snapshot(config_dir) == before
        assert keys["SecretAccessKey"] in item(secret_service)

    # Back to a file: the keyring item is deleted, not left behind.
    back = run(env, "configure", "root", "--store", "file", "--sts-endpoint", aws.endpoint)
    outputs.append(back)
    assert back.returncode == 0, back.stderr
    assert "deleted the keyring item dyncreds/root" in back.stdout
    assert item(secret_service) == ""
    assert keys["SecretAccessKey"] in key_file.read_text()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    root = tomllib.loads(config.read_text())["root"]
    assert root["credentials_file"] == "root-credentials.toml" and "keyring" not in root

    for result in outputs:
        assert keys["SecretAccessKey"] not in result.stdout + result.stderr


def test_a_keyring_that_cannot_be_reached_changes_nothing(
    aws: StandIn,
    short_dir: Path,
    secret_service: dict[str, str],  # noqa: F811
) -> None:
    config_dir = short_dir / "config"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNCREDS_")}
    env.update(secret_service, DYNCREDS_CONFIG_DIR=str(config_dir))
    keys = aws.admin_keys
    first = run(
        env, "configure", "root", "--access-key-id", keys["AccessKeyId"], "--secret-stdin",
        "--no-check", stdin=keys["SecretAccessKey"] + "\n",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = snapshot(config_dir)
    no_bus = dict(env, DBUS_SESSION_BUS_ADDRESS=f"unix:path={short_dir}/no-such-bus")
    refused = run(no_bus, "configure", "root", "--store", "keyring", "--no-check")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "keyring" in refused.stderr and "nothing was written" in refused.stderr
    assert snapshot(config_dir) == before
    # A root that is a profile has no key to move: a new one is asked for (no terminal
    # here: refused), nothing written.
    prof = run(env, "configure", "root", "--profile", "admin", "--no-check")
    assert prof.returncode == 0, prof.stderr
    assert "the old key is still in root-credentials.toml" in prof.stdout
    before = snapshot(config_dir)
    nothing = run(env, "configure", "root", "--store", "keyring", "--no-check")
    assert nothing.returncode == 2
    assert "no terminal to prompt on" in nothing.stderr
    assert snapshot(config_dir) == before
