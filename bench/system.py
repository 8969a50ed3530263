"""System mode's cost: the access check on every request (decisions cached per
connection, groups re-read at most once a second) and the per-consumer lease
lookup, measured as the throughput of cached ``credentials`` requests at 64
clients, a user-mode agent and a system-mode agent side by side (rounds
interleaved, medians compared: the machine is shared and noisy).

The clients run as this benchmark's user, allowed by an [[access]] rule; their
decisions take the same cached path whoever they are.
"""

from __future__ import annotations

import getpass
import statistics
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.harness import SESSION_ROLE, agent, cpu_note, emit
from bench.load import run_load

SETTINGS = 'propagation_checks = 1\nlog_level = "warning"\n'
ROUNDS = 5
CLIENTS = 64


def _rules(base: Path, env: dict[str, str]) -> None:
    config = base / "config" / "config.toml"
    rule = f'\n[[access]]\nusers = ["{getpass.getuser()}"]\nroles = ["r"]\n'
    config.write_text(config.read_text() + rule)


def bench_system() -> None:
    samples: dict[str, list[float]] = {}
    with ExitStack() as stack:
        user = stack.enter_context(agent({"r": SESSION_ROLE}, SETTINGS))
        assert user.request("credentials", role="r")["ok"]
        system = stack.enter_context(
            agent({"r": SESSION_ROLE}, SETTINGS + 'mode = "system"\n', prepare=_rules)
        )
        assert system.request("credentials", role="r")["ok"]
        for _ in range(ROUNDS):
            for persistent in (True, False):
                for name, env in (("user", user), ("system", system)):
                    row = run_load(str(env.socket), CLIENTS, persistent, seconds=2.0)
                    assert row["errors"] == 0, row
                    samples.setdefault(f"{name}/{row['mode']}", []).append(row["req_per_s"])
    medians = {key: statistics.median(values) for key, values in samples.items()}
    cost: dict[str, Any] = {}
    for mode in ("persistent", "new-connection"):
        user_rate, system_rate = medians[f"user/{mode}"], medians[f"system/{mode}"]
        cost[mode] = round(100 * (1 - system_rate / max(user_rate, 1)), 1)
    emit(
        "system",
        clients=CLIENTS,
        req_per_s_median=medians,
        samples=samples,
        rule_check_cost_percent=cost,
        targets={"rule_check_cost_percent": "<= 5 (cached requests, 64 clients)"},
        machine=cpu_note(),
    )
