"""`make check` runs the tests marked neither e2e, process nor clients, and trusts
no mark: an unmarked test that starts a process or moto's server fails
(tests/conftest.py). These two are unmarked, and see it happen."""

from __future__ import annotations

import os
import subprocess

import pytest


def test_an_unmarked_test_may_not_start_a_process() -> None:
    with pytest.raises(AssertionError, match="mark it process"):
        subprocess.run(["true"], check=False)
    with pytest.raises(AssertionError, match="mark it process"):
        os.fork()


def test_an_unmarked_test_may_not_use_moto(request: pytest.FixtureRequest) -> None:
    with pytest.raises(pytest.fail.Exception, match="mark it e2e"):
        request.getfixturevalue("aws")


@pytest.mark.process
def test_a_marked_one_may() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0
