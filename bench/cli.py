"""CLI start-up: ``dyncreds --version``, ``status`` (against a running agent),
``roles`` (offline) and what a Tab costs (``completion --list roles``), each beside
``python -c pass`` from the same venv, interleaved so that noise hits all alike.

dyncreds is installed as a user installs it (regular, in a fresh venv). The target
is at most 4x ``python -c pass`` (in time, and in instructions counted by valgrind,
which a busy machine does not disturb): a command imports what it needs when it runs,
and --version and status load no trio, boto3, botocore or h11 (also a test:
tests/test_cli_startup.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from bench.harness import (
    SESSION_ROLE,
    agent,
    cpu_note,
    emit,
    fresh_install,
    instructions,
    summary,
    time_interleaved,
)

HEAVY = ("trio", "boto3", "botocore", "h11", "msgspec", "tomlkit")
LOADED = (
    "import sys, runpy\n"
    "sys.argv = ['dyncreds', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('dyncreds', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}), file=sys.stderr)\n"
)


def _loaded(python: str, argv: list[str], env: dict[str, str]) -> list[str]:
    """The heavy modules a command loads, as it runs."""
    run = subprocess.run([python, "-c", LOADED, *argv], env=env, capture_output=True, text=True)
    loaded: list[str] = json.loads(run.stderr.strip().splitlines()[-1].replace("'", '"'))
    return loaded


def bench_cli() -> None:
    venv = fresh_install()
    try:
        with agent({"r": SESSION_ROLE}) as env:
            assert env.request("credentials", role="r")["ok"]
            bin_dir = venv / "bin"
            python, dyncreds = str(bin_dir / "python"), str(bin_dir / "dyncreds")
            commands = {
                "python_floor": [python, "-c", "pass"],
                "version": [dyncreds, "--version"],
                "status": [dyncreds, "status"],
                "roles": [dyncreds, "roles"],
                "tab_roles": [dyncreds, "completion", "--list", "roles"],
            }
            samples = time_interleaved(list(commands.values()), 40, env.env)
            result: dict[str, Any] = {
                name: summary(times) for name, times in zip(commands, samples, strict=True)
            }
            floor = result["python_floor"]["median_ms"]
            ratios = {
                name: round(result[name]["median_ms"] / floor, 2)
                for name in commands
                if name != "python_floor"
            }
            counts = {name: instructions(argv, env.env) for name, argv in commands.items()}
            floor_count = counts["python_floor"]
            counted = {
                name: {"count": count, "ratio_to_floor": round(count / floor_count, 2)}
                for name, count in counts.items()
                if count and floor_count and name != "python_floor"
            }
            loaded = {
                name: _loaded(python, argv[1:], env.env)
                for name, argv in commands.items()
                if name != "python_floor"
            }
        emit(
            "cli",
            **result,
            ratio_to_floor=ratios,
            target_ratio=4,
            python_floor_instructions=counts["python_floor"],
            instructions=counted,
            heavy_modules_loaded=loaded,
            machine=cpu_note(),
        )
    finally:
        shutil.rmtree(venv, ignore_errors=True)
