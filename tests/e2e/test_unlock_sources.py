"""`dyncreds unlock` takes the MFA code the way people have it: from a YubiKey
through `[root] mfa_process` (a fake `ykman` on PATH), piped on stdin, or from a
desktop prompt when no terminal is attached (a fake `zenity`); with none of them, a
clear error and no AWS call. The code reaches GetSessionToken (a recording proxy
shows it) and never the CLI's output."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dyncreds.aws.standin import StandIn
from tests.e2e.conftest import Rig

pytestmark = pytest.mark.e2e

SERIAL = "arn:aws:iam::123456789012:mfa/vaultuser"
STS_ROLE = 'credential_type = "session_token"\nttl = "1h"\n'


def fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def unlock(
    env: dict[str, str], stdin: str | None = None, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dyncreds", "unlock", *args],
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def on_a_terminal(env: dict[str, str], code: str) -> int:
    """Run unlock with a pty as its terminal; type the code once it asks."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "unlock"],
        env=env,
        stdin=slave,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"MFA code for " + SERIAL.encode() not in seen:
        assert time.monotonic() < deadline, seen
        if select.select([master], [], [], 1)[0]:
            seen += os.read(master, 1024)
    os.write(master, code.encode() + b"\n")
    status = process.wait(timeout=60)
    os.close(master)
    return status


def test_unlock_reads_the_code_from_ykman_stdin_or_a_desktop_prompt(
    aws: StandIn, rig: Callable[..., Rig], short_dir: Path
) -> None:
    aws.enforce_iam(unauthenticated_requests=1_000_000_000)  # see test_root_lock.py
    bin_dir = short_dir / "fakebin"
    bin_dir.mkdir()
    fake(
        bin_dir,
        "ykman",
        'echo "Touch your YubiKey..." >&2\n'
        '[ "$*" = "oath accounts code --single aws" ] || exit 3\necho 654321\n',
    )
    made = rig(
        {"s": STS_ROLE},
        tables=f'mfa_serial = "{SERIAL}"\nmfa_process = "ykman oath accounts code --single aws"\n',
    )
    agent = made.start()
    base = {k: v for k, v in agent.env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env = dict(base, PATH=f"{bin_dir}:{os.environ['PATH']}")

    def codes() -> list[str]:
        return [c.params["TokenCode"] for c in made.proxy.calls_of("GetSessionToken")]

    # [root] mfa_process: the YubiKey's code; its "touch" line reaches the user.
    done = unlock(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("unlocked until ")
    assert "Touch your YubiKey" in done.stderr
    assert codes() == ["654321"]
    outputs = [done]

    # Without mfa_process: stdin, then a desktop prompt, then a clear error.
    agent.write_main(tables=f'mfa_serial = "{SERIAL}"\n')
    config = agent.config_dir / "config.toml"
    config.write_text(config.read_text().replace(aws.endpoint, made.proxy.endpoint))
    agent.cli("lock")
    piped = unlock(env, "112233\n")
    assert piped.returncode == 0, piped.stderr
    assert codes() == ["654321", "112233"]
    outputs.append(piped)

    fake(bin_dir, "zenity", 'case "$*" in *--entry*) echo 445566 ;; *) exit 5 ;; esac\n')
    agent.cli("lock")
    desktop = unlock(dict(env, DISPLAY=":99"))
    assert desktop.returncode == 0, desktop.stderr
    assert codes() == ["654321", "112233", "445566"]
    outputs.append(desktop)

    agent.cli("lock")
    assert on_a_terminal(env, "778899") == 0
    assert codes()[-1] == "778899"

    (bin_dir / "zenity").unlink()  # KDE: kdialog instead
    fake(bin_dir, "kdialog", 'case "$*" in *--inputbox*) echo 990011 ;; *) exit 5 ;; esac\n')
    agent.cli("lock")
    kde = unlock(dict(env, WAYLAND_DISPLAY="wayland-0"))
    assert kde.returncode == 0, kde.stderr
    assert codes()[-1] == "990011"
    (bin_dir / "kdialog").unlink()

    fake(bin_dir, "zenity", "exit 1\n")  # the user pressed Cancel
    cancelled = unlock(dict(env, DISPLAY=":99"))
    assert cancelled.returncode == 2 and "cancelled" in cancelled.stderr
    nothing = unlock(env)  # no terminal, nothing piped, no display
    assert nothing.returncode == 2
    assert "pipe the code on stdin, or set [root] mfa_process" in nothing.stderr
    assert "Traceback" not in nothing.stderr + cancelled.stderr
    assert len(codes()) == 5  # no AWS call for either

    for result in outputs:
        for code in ("654321", "112233", "445566"):
            assert code not in result.stdout + result.stderr


def test_a_failing_mfa_process_is_named_and_nothing_is_sent(
    aws: StandIn, rig: Callable[..., Rig], short_dir: Path
) -> None:
    bin_dir = short_dir / "fakebin"
    bin_dir.mkdir()
    touched = short_dir / "ykman-ran"
    fake(bin_dir, "ykman", f'touch {touched}\necho "Failed to connect to YubiKey." >&2\nexit 1\n')
    made = rig(
        {"s": STS_ROLE},
        tables=f'mfa_serial = "{SERIAL}"\nmfa_process = "ykman oath accounts code --single aws"\n',
    )
    agent = made.start()
    env = dict(agent.env, PATH=f"{bin_dir}:{os.environ['PATH']}")
    # No agent there: said at once, and the YubiKey is not asked.
    absent = unlock(dict(env, DYNCREDS_SOCKET=str(short_dir / "none.sock")))
    assert absent.returncode == 3 and not touched.exists()
    failed = unlock(env)
    assert touched.exists()
    assert failed.returncode == 2
    assert "Failed to connect to YubiKey." in failed.stderr  # ykman's own words
    assert "[root] mfa_process exited 1: ykman oath accounts code --single aws" in failed.stderr
    assert made.proxy.calls_of("GetSessionToken") == []
    assert agent.request("status")["root"]["locked"] is True


def test_unlock_of_an_agent_without_a_lock_says_so_before_asking_for_a_code(
    aws: StandIn, rig: Callable[..., Rig], short_dir: Path
) -> None:
    """No mfa_serial: the agent has nothing to unlock. Said at once - not "no
    terminal to ask for the code on", and no mfa_process (a YubiKey) is run."""
    bin_dir = short_dir / "fakebin"
    bin_dir.mkdir()
    touched = short_dir / "ykman-ran"
    fake(bin_dir, "ykman", f"touch {touched}\necho 123456\n")
    agent = rig({"s": STS_ROLE}).start()
    env = dict(agent.env, PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = unlock(env)  # no terminal, nothing on stdin
    assert result.returncode == 2
    assert "this agent has no lock" in result.stderr and "terminal" not in result.stderr
    assert not touched.exists()
