"""`dyncreds demo` runs start to finish offline and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_to_the_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dyncreds", "demo"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "s3:ListBuckets -> AccessDenied" in out
    assert ":assumed-role/deploy/" in out
    assert "is now rejected: InvalidClientTokenId" in out
    assert "temporary IAM users left: none" in out
    assert "agent exited with status 0" in out
    assert "dyncreds demo --console" in out  # how to open the console on the stand-in


def test_demo_console_serves_the_console_on_the_stand_in() -> None:
    """`dyncreds demo --console`: the walk, then `dyncreds ui` on its agent until it stops."""
    import http.client
    import os
    import re
    import signal

    process = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "demo", "--console"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, BROWSER="true"),  # webbrowser: a no-op command
    )
    assert process.stdout is not None
    seen, ui_pid, url = [], None, None
    for line in process.stdout:
        seen.append(line)
        pid = re.search(r"\[(\d+)\] \[INFO\] Running on", line)
        ui_pid = int(pid.group(1)) if pid else ui_pid
        url = re.search(r"http://(127\.0\.0\.1):(\d+)/\?token=([\w-]+)", line)
        if url:
            break
    assert url and ui_pid, "".join(seen)[-3000:]
    conn = http.client.HTTPConnection(url.group(1), int(url.group(2)), timeout=30)
    conn.request("GET", f"/?token={url.group(3)}")
    assert conn.getresponse().status == 303
    conn.close()
    os.kill(ui_pid, signal.SIGINT)  # as Ctrl-C would
    rest = process.stdout.read()
    assert process.wait(timeout=120) == 0, rest[-3000:]
    assert "agent exited with status 0" in rest
