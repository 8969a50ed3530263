"""The op table with the audit log around it, on trio's mock clock: what the audit
records is what the op answered, whatever the agent holds by the time it is written."""

from __future__ import annotations

import json
from pathlib import Path

import trio
import trio.testing

from dyncreds import audit, protocol
from dyncreds.service import make_handler
from dyncreds.watchers import Watchers
from tests.fakes import FakeBackend, lease_of
from tests.test_agent_timing import STS, Harness, inline
from tests.test_agent_timing import harness as harness  # the fixture


async def no_reload() -> list[str]:
    return []


async def test_the_audit_records_the_lease_the_op_answered_not_a_newer_one(
    harness: Harness, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend = FakeBackend(latency=0.5)
    agent = await harness({"s": STS + 'ttl = "1h"\n'}, backend=backend)
    path = tmp_path / "audit.jsonl"
    audit_log = audit.AuditLog(path, offload=inline)
    watchers = Watchers()
    handler = make_handler(agent, no_reload, audit_log=audit_log, watchers=watchers)
    answered: list[bytes] = []
    replied = trio.Event()

    async def renew() -> None:
        answered.append(await handler(protocol.Renew(role="s")))
        replied.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(audit_log.run)
        # An endpoint that never acknowledges: the renewal's fence waits ACK_WAIT
        # (1 s) after the new lease is made, before the reply and its audit record.
        nursery.start_soon(watchers.watch, "endpoint", watchers.generation)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(renew)
        await trio.sleep(0.75)  # the first renewal's lease is made; its fence waits
        newer, _ = await agent.renew("s")  # meanwhile, another lease replaces it
        await replied.wait()
        await trio.sleep(1)  # the audit log's batch is written
        nursery.cancel_scope.cancel()
    sent = json.loads(answered[0])["lease"]["id"]
    assert sent != newer.id and lease_of(agent, "s") is newer
    renewals = [r for r in audit.read(path) if r["op"] == "renew"]
    assert [r["lease_id"] for r in renewals] == [sent]
    assert renewals[0]["access_key_id"] == backend.issued[-2].access_key_id
