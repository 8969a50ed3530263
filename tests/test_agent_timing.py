"""The agent's timing on trio's mock clock, with injected wall time and a fake
AWS backend: background renewal and replacement, min_remaining, idle_after,
max_ttl, revocation at the announced expiry, and wall-clock jumps."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dyncreds import config
from dyncreds.agent import Agent
from dyncreds.journal.sqlite import SqliteJournal
from dyncreds.protocol import Upstream
from tests.fakes import FakeBackend, WallClock

MIN_REMAINING = 20 * 60


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    """Blocking work (journal writes, reading config), run on the event loop: a
    worker thread would let the mock clock jump while it runs."""
    return fn(*args)


Harness = Callable[..., Awaitable[Agent]]


def make_config(tmp_path: Path, roles: dict[str, str], agent: str = "") -> config.Config:
    (tmp_path / "roles").mkdir(exist_ok=True)
    (tmp_path / "config.toml").write_text(f'[agent]\nmin_remaining = "20m"\n{agent}\n')
    for name, text in roles.items():
        (tmp_path / "roles" / f"{name}.toml").write_text(text)
    return config.load(tmp_path)


POLICY = json.dumps({"Version": "2012-10-17", "Statement": []})
IAM = f"credential_type = \"iam_user\"\npolicy_document = '{POLICY}'\n"
STS = 'credential_type = "session_token"\n'


@pytest.fixture
async def harness(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> AsyncIterator[Harness]:
    async with trio.open_nursery() as nursery:
        made: list[Agent] = []

        async def start(
            roles: dict[str, str], agent_settings: str = "", backend: FakeBackend | None = None
        ) -> Agent:
            cfg = make_config(tmp_path, roles, agent_settings)
            journal = SqliteJournal(tmp_path / "journal.sqlite3", offload=inline)
            backend = backend or FakeBackend()
            backend.journal = journal
            wall = WallClock()
            backend.wall = backend.wall or wall
            agent = Agent(
                cfg,
                journal,
                backend,
                "test-agent",
                wall=wall,
                load_config=lambda: config.load(tmp_path),
                rng=lambda: 0.5,
                offload=inline,
                root_gate=backend.root_gate,
            )
            await nursery.start(agent.run)
            made.append(agent)
            return agent

        yield start
        nursery.cancel_scope.cancel()


async def use_for(agent: Agent, role: str, seconds: float, every: float = 60) -> list[float]:
    """Ask for credentials every ``every`` seconds; return each served lease's
    remaining lifetime. Asserts requests after the first are served from memory."""
    remaining = []
    end = trio.current_time() + seconds
    first = True
    while trio.current_time() < end:
        before = trio.current_time()
        lease = await agent.credentials(role)
        if not first:
            assert trio.current_time() == before, "request waited for AWS"
        first = False
        remaining.append(lease.expires_at - agent.now())
        await trio.sleep(every)
    return remaining


async def test_iam_user_is_extended_in_background_before_min_remaining(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"r": IAM + 'ttl = "1h"\nmax_ttl = "12h"\n'}, backend=backend)
    remaining = await use_for(agent, "r", 3 * 3600)
    assert min(remaining) >= MIN_REMAINING
    assert len(backend.issued) == 1  # extended (same keys), never replaced
    assert len(backend.extended) >= 3


async def test_sts_lease_is_replaced_in_background(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"s": STS + 'ttl = "1h"\n'}, backend=backend)
    remaining = await use_for(agent, "s", 3 * 3600)
    assert min(remaining) >= MIN_REMAINING
    assert 3 <= len(backend.issued) <= 6
    assert backend.extended == []


async def test_max_ttl_forces_new_user_and_old_is_revoked_at_announced_expiry(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"r": IAM + 'ttl = "1h"\nmax_ttl = "2h"\n'}, backend=backend)
    first = await agent.credentials("r")
    remaining = await use_for(agent, "r", 2.5 * 3600)
    assert min(remaining) >= MIN_REMAINING
    assert len(backend.issued) >= 2
    old = backend.issued[0]
    assert old.id == first.id
    # Revoked, but not before the expiry it last announced.
    assert old.user_name in backend.deleted
    final_expiry = max([first.expires_at] + [at for lid, at in backend.extended if lid == old.id])
    assert final_expiry <= old.hard_expires_at


async def test_revocation_waits_for_announced_expiry(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"r": IAM + 'ttl = "1h"\nmax_ttl = "1h"\n'}, backend=backend)
    lease = await agent.credentials("r")
    await use_for(agent, "r", lease.expires_at - agent.now() - 60)
    assert lease.user_name not in backend.deleted  # still inside its promise
    await trio.sleep(120)
    assert lease.user_name in backend.deleted


async def test_idle_role_is_not_refreshed_and_is_revoked_at_expiry(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness(
        {"r": IAM + 'ttl = "2h"\n'}, agent_settings='idle_after = "10m"', backend=backend
    )
    lease = await agent.credentials("r")
    await trio.sleep(3 * 3600)
    assert len(backend.issued) == 1
    assert backend.extended == []
    assert backend.deleted == [lease.user_name]
    assert agent.status()["roles"][0]["state"] == "idle"


async def test_prefetch_role_is_warm_without_requests(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"p": STS + "prefetch = true\n"}, backend=backend)
    await trio.sleep(5)
    assert len(backend.issued) == 1
    before = trio.current_time()
    await agent.credentials("p")
    assert trio.current_time() == before


async def test_wall_clock_jump_past_expiry_never_serves_expired_keys(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend(latency=2)
    agent = await harness({"s": STS + 'ttl = "1h"\n'}, backend=backend)
    first = await agent.credentials("s")
    wall = agent.wall
    assert isinstance(wall, WallClock)
    wall.jump(2 * 3600)  # the laptop slept; no timer fired
    second = await agent.credentials("s")
    assert second.id != first.id
    assert second.expires_at - agent.now() >= MIN_REMAINING


async def test_wall_clock_jump_into_the_refresh_window_replaces(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"s": STS + 'ttl = "1h"\n'}, backend=backend)
    first = await agent.credentials("s")
    wall = agent.wall
    assert isinstance(wall, WallClock)
    wall.jump(50 * 60)
    second = await agent.credentials("s")
    assert second.id != first.id
    assert second.expires_at - agent.now() >= MIN_REMAINING


async def test_short_ttl_role_is_served_and_replaced(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"s": STS + 'ttl = "15m"\n'}, backend=backend)
    remaining = await use_for(agent, "s", 3600, every=30)
    # The role's own TTL is shorter than min_remaining: at least half of it.
    assert min(remaining) >= 7.5 * 60
    assert len(backend.issued) >= 4


async def test_failed_issuance_fails_all_waiters_with_upstream_and_recovers(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend(
        fail_with=Upstream("AWS CreateUser failed: Throttling", aws_code="Throttling")
    )
    agent = await harness({"r": IAM}, backend=backend)
    errors: list[str] = []

    async def ask() -> None:
        try:
            await agent.credentials("r")
        except Upstream as exc:
            errors.append(exc.aws_code)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(ask)
    assert errors == ["Throttling"] * 20
    assert "Throttling" in agent.status()["roles"][0]["last_error"]
    backend.fail_with = None
    lease = await agent.credentials("r")
    assert lease.access_key_id.startswith("AKIA")
    assert agent.status()["roles"][0]["last_error"] is None


async def test_failed_renewal_keeps_serving_valid_lease_and_retries(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"s": STS + 'ttl = "1h"\n'}, backend=backend)
    first = await agent.credentials("s")
    backend.fail_with = Upstream("AWS down", aws_code="ServiceUnavailable")
    # Into the refresh window: renewals fail, the still-valid lease is served.
    for _ in range(45):
        await trio.sleep(60)
        if agent.now() < first.expires_at - MIN_REMAINING:
            lease = await agent.credentials("s")
            assert lease.id == first.id
    assert agent.workers["s"].state.failures >= 1
    backend.fail_with = None
    await trio.sleep(600)
    lease = await agent.credentials("s")
    assert lease.id != first.id


async def test_concurrent_requests_share_one_issuance(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend(latency=3)
    agent = await harness({"r": IAM}, backend=backend)
    keys = set()

    async def ask() -> None:
        keys.add((await agent.credentials("r")).access_key_id)

    async with trio.open_nursery() as nursery:
        for _ in range(500):
            nursery.start_soon(ask)
    assert len(backend.issued) == 1
    assert len(keys) == 1


async def test_explicit_revoke_and_renew(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"r": IAM}, backend=backend)
    first = await agent.credentials("r")
    renewed, replaced = await agent.renew("r")
    assert replaced is not None and replaced.id == first.id
    assert renewed.id != first.id
    assert first.user_name not in backend.deleted  # renew retires per its rules
    revoked = await agent.revoke(role="r")
    assert sorted(r["lease_id"] for r in revoked) == sorted([first.id, renewed.id])
    assert {r["outcome"] for r in revoked} == {"deleted"}
    assert set(backend.deleted) == {first.user_name, renewed.user_name}
    assert agent.status()["roles"][0]["lease_id"] is None


# --------------------------------------------------------------------------- static users

STATIC = 'credential_type = "static_user"\nusername = "legacy-app"\nrotation_period = "1h"\n'
BASE = WallClock().base


def announced_deletions_kept(backend: FakeBackend) -> None:
    """Every key the agent deleted was deleted at or after the expiry it announced."""
    for lease in backend.issued:
        if lease.access_key_id in backend.deleted_at:
            assert BASE + backend.deleted_at[lease.access_key_id] >= lease.expires_at


async def test_static_user_rotates_on_schedule_even_unused(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    await harness({"s": STATIC}, backend=backend)
    await trio.sleep(5 * 3600 + 60)  # nobody asks for it: rotation goes on regardless
    assert 5 <= len(backend.issued) <= 7
    assert backend.most_keys <= 2  # never a third key (hashicorp/vault#27477)
    assert len(backend.keys["legacy-app"]) <= 2
    announced_deletions_kept(backend)
    periods = [b.issued_at - a.issued_at for a, b in itertools.pairwise(backend.issued)]
    assert all(3000 <= p <= 3600 for p in periods), periods
    lease = backend.issued[-1]
    assert lease.expires_at - lease.issued_at == 3600 + MIN_REMAINING


async def test_static_user_changed_period_applies(
    harness: Harness, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    backend = FakeBackend()
    agent = await harness({"s": STATIC}, backend=backend)
    await trio.sleep(60)
    (tmp_path / "roles" / "s.toml").write_text(STATIC.replace('"1h"', '"2h"'))
    await agent.reload()  # hashicorp/vault#21967: a changed period was ignored
    await trio.sleep(60)
    kept = await agent.credentials("s")  # the same key: a reload makes no new one
    assert kept.id == backend.issued[0].id and len(backend.issued) == 1
    await trio.sleep(8 * 3600)
    # The next rotation comes on the old schedule; from then on, the new period.
    rotated = backend.issued[1:]
    assert rotated[0].expires_at - rotated[0].issued_at == 2 * 3600 + MIN_REMAINING
    periods = [b.issued_at - a.issued_at for a, b in itertools.pairwise(rotated)]
    assert len(periods) >= 2 and all(6000 <= p <= 7200 for p in periods), periods
    assert backend.most_keys <= 2
    announced_deletions_kept(backend)


async def test_static_user_rotation_goes_on_after_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """hashicorp/vault#21935: rotation stopped after a restart."""
    backend = FakeBackend()
    cfg = make_config(tmp_path, {"s": STATIC})
    for run in (1, 2):
        journal = SqliteJournal(tmp_path / "journal.sqlite3", offload=inline)
        backend.journal = journal
        agent = Agent(cfg, journal, backend, "test-agent", wall=WallClock(), rng=lambda: 0.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            await trio.sleep(3 * 3600)
            nursery.cancel_scope.cancel()
        journal.close_now()
        if run == 1:
            before = len(backend.issued)
    assert len(backend.issued) - before >= 3  # the second run rotated too
    assert backend.most_keys <= 2
    announced_deletions_kept(backend)


async def test_a_renew_whose_replacement_fails_says_so(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend()
    agent = await harness({"r": IAM}, backend=backend)
    first = await agent.credentials("r")
    backend.fail_with = Upstream("AWS CreateUser failed: Throttling", "Throttling")
    with pytest.raises(Upstream, match="Throttling"):
        await agent.renew("r")
    assert (await agent.credentials("r")).id == first.id  # the old lease still serves
