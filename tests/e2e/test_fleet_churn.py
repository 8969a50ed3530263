"""A churn run of the fleet: 3 agents x 20 iam_user roles, one 30 s ahead
(libfaketime), random requests, SIGKILLs, SIGTERMs and SIGSTOPs; every user
deleted once, none early, none left."""

from __future__ import annotations

import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dyncreds.protocol import parse_rfc3339
from tests.conftest import raw_request, temp_users, wait_for
from tests.e2e.fleetrig import (
    ROLE,
    FleetRig,
    faketime,
    joined,
)

pytestmark = pytest.mark.e2e


CHURN_ROLES = {f"r{i:02d}": ROLE for i in range(20)}
CHURN_SECONDS = 30.0


class Churn:
    """Three agents (one 30 s ahead), killed, stopped and restarted at random."""

    def __init__(self, fleet: FleetRig, seed: int):
        self.fleet = fleet
        self.rng = random.Random(seed)
        self.agents = {name: fleet.agent(name, roles=CHURN_ROLES) for name in ("p", "q", "f")}
        self.env = {"p": {}, "q": {}, "f": faketime("+30s")}
        self.skew = {"p": 0.0, "q": 0.0, "f": 30.0}
        self.down: dict[str, float] = {}  # name -> when to start it again
        self.stopped: dict[str, float] = {}  # name -> when to SIGCONT it
        self.served: list[tuple[str, dict[str, str]]] = []  # (agent, lease)
        self.events: list[str] = []
        self.asking = ThreadPoolExecutor(max_workers=6)

    def start(self, name: str) -> None:
        self.agents[name].start(self.env[name])

    def running(self) -> list[str]:
        return [n for n in self.agents if n not in self.down and n not in self.stopped]

    def step(self, now: float) -> None:
        for name, at in list(self.down.items()):
            if now >= at:
                del self.down[name]
                self.start(name)
        for name, at in list(self.stopped.items()):
            if now >= at:
                del self.stopped[name]
                self._signal(name, signal.SIGCONT)
        running = self.running()
        if not running:
            return
        name = self.rng.choice(running)
        action = self.rng.choice(["ask"] * 6 + ["kill", "term", "stop"])
        if action == "ask" or len(running) < 2:  # never all three down at once
            self._ask(name)
            return
        self.events.append(f"{action} {name}")
        if action == "stop":
            self._signal(name, signal.SIGSTOP)
            self.stopped[name] = now + self.rng.uniform(1, 8)  # sometimes past dead_after
        else:
            self.agents[name].stop(signal.SIGKILL if action == "kill" else signal.SIGTERM)
            self.down[name] = now + self.rng.uniform(0.5, 7)

    def _ask(self, name: str) -> None:
        """A client asks, on its own thread: several issuances are in flight when
        an agent is killed or stopped."""
        role = self.rng.choice(sorted(CHURN_ROLES))
        self.asking.submit(self._request, name, self.agents[name].socket, role)

    def _request(self, name: str, socket: Path, role: str) -> None:
        try:
            answer = raw_request(socket, {"op": "credentials", "role": role}, 30)
        except OSError:
            return
        if answer.get("ok"):
            self.served.append((name, answer["lease"]))

    def _signal(self, name: str, sig: int) -> None:
        process = self.agents[name].process
        assert process is not None
        os.kill(process.pid, sig)

    def settle(self) -> None:
        """Everyone back, every client answered, then each agent restarted once
        more: no role stays warm."""
        for name in list(self.stopped):
            self._signal(name, signal.SIGCONT)
        self.stopped.clear()
        self.asking.shutdown(wait=True)
        for name in list(self.down):
            self.start(name)
        self.down.clear()
        for name, made in self.agents.items():
            made.stop()
            self.start(name)


def test_churn_every_user_deleted_once_none_early_none_left(fleet: FleetRig) -> None:
    """3 agents x 20 iam_user roles, one agent's clock 30 s ahead; for 30 s, random
    requests, SIGKILLs, SIGTERMs and SIGSTOPs (some longer than dead_after). Then:
    every user created is deleted exactly once (one DeleteUser that succeeded),
    no served lease's user before the instant it announced (on its issuer's
    clock), and none is left."""
    seed = random.randrange(1_000_000)
    churn = Churn(fleet, seed)
    churn.agents["p"].cli("fleet", "init")
    for name in churn.agents:
        churn.start(name)
    wait_for(lambda: all(joined(a) for a in churn.agents.values()), message="all joined")
    started = time.monotonic()
    while time.monotonic() - started < CHURN_SECONDS:
        churn.step(time.monotonic())
        time.sleep(churn.rng.uniform(0.1, 0.4))
    churned = time.monotonic()
    churn.settle()
    settled = time.monotonic()
    assert churn.served, f"seed {seed}: nothing was served"
    latest = max(parse_rfc3339(lease["expires_at"]) - churn.skew[n] for n, lease in churn.served)
    wait_for(
        lambda: not temp_users(fleet.aws),
        timeout=max(latest - time.time(), 0) + 45,
        interval=1,
        message=f"every user deleted (seed {seed}, events {churn.events})",
    )
    where = f"seed {seed}, events {churn.events}"
    for user in fleet.created_users():
        assert len(fleet.deleted(user)) == 1, f"{user} deleted {fleet.deleted(user)} ({where})"
    for name, lease in churn.served:
        user = fleet.user_of(lease["id"])
        announced = parse_rfc3339(lease["expires_at"]) - churn.skew[name]  # on the true clock
        (deleted_at,) = fleet.deleted(user)
        assert deleted_at >= announced, (
            f"{user} deleted {announced - deleted_at:.1f}s early ({where})"
        )
    logs = "".join(a.log() for a in churn.agents.values())
    assert "Traceback" not in logs
    print(
        f"churn seed {seed}: {len(churn.served)} served, {len(fleet.created_users())} users, "
        f"{logs.count('fleet.takeover ')} takeovers, events {churn.events}; "
        f"churn {churned - started:.0f}s, settle {settled - churned:.0f}s, "
        f"drain {time.monotonic() - settled:.0f}s"
    )
