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
