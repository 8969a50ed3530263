"""`status` wraps its warnings, never cuts them, where people read it: piped (80
columns) and under `--watch` on a narrow terminal (a pty of 50 columns). The fix a
warning offers is its last words."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Callable

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, wait_for

pytestmark = pytest.mark.e2e

STS_ROLE = 'credential_type = "session_token"\n'
FIX = "`dyncreds configure root --store keyring` moves it to the OS keyring"


def unwrapped(text: str) -> str:
    """The screen's lines joined back into sentences (a continuation starts with 2 spaces)."""
    return "".join(
        (" " + line.strip()) if line.startswith("  ") else ("\n" + line)
        for line in text.replace("\r", "").splitlines()
    )


def test_status_wraps_its_warning_piped_and_under_watch(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"r": STS_ROLE})
    piped = agent.cli("status").stdout
    assert "…" not in piped.split("\n\n")[0]
    assert FIX in unwrapped(piped)
    assert all(len(line) <= 80 for line in piped.splitlines()[:6])

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 50, 0, 0))
    watch = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "status", "--watch", "--interval", "0.2"],
        env=dict(agent.env, NO_COLOR="1"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    seen = b""

    def one_screen() -> str | None:
        nonlocal seen
        while select.select([master], [], [], 0.1)[0]:
            seen += os.read(master, 65536)
        screens = seen.split(b"\033[H\033[2J")
        complete = [s for s in screens[1:-1] if b"ROLE" in s]  # followed by the next one
        return complete[-1].decode() if complete else None

    try:
        wait_for(lambda: one_screen() is not None, timeout=30, message="a whole screen")
        screen = one_screen()
        assert screen is not None
        assert FIX in unwrapped(screen)
        header = screen.replace("\r", "").split("\n\n")[0]
        assert "…" not in header.split("\n", 1)[1]  # the first line may be cut; no sentence
        for line in header.splitlines()[1:]:
            assert len(line) <= 50 or "`" in line or " " not in line.strip(), line
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=10) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
        os.close(master)
