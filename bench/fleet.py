"""The fleet's DynamoDB bill, measured where it can be and worked out where not.

On moto's server, in this process, through dyncreds' own code (FleetTable,
DynamoDbJournal, Fleet): every DynamoDB request is counted by a botocore
``before-send`` hook, with its time. Measured: the table operations one
iam_user lease costs over its life, one heartbeat, one roster read; the item
sizes. Worked out from those: requests per hour per agent, and per month for
10 / 1,000 / 10,000 hosts with 5 iam_user roles each, at on-demand prices.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from bench.harness import cpu_note, emit
from dyncreds.aws.standin import StandIn
from dyncreds.fleet import ROSTER_READS_PER_HEARTBEAT, check_every

# On-demand, us-east-1 (since November 2024): per million request units.
PRICE_WRITE = 0.625
PRICE_READ = 0.125
HOURS_PER_MONTH = 730
ROLES_PER_HOST = 5
LEASES = 50
DEAD_AFTER = 300.0  # the default: how often an agent reconciles its own partition


def bench_fleet() -> None:
    from dyncreds.fleetitems import AgentItem, encode_record
    from dyncreds.journal import Record
    from dyncreds.journal.dynamodb import DynamoDbJournal

    aws = StandIn()
    base = Path(tempfile.mkdtemp(prefix="dcb-fleet-", dir="/tmp"))
    ops: Counter[str] = Counter()

    def count(**kwargs: Any) -> None:
        ops[str(kwargs.get("event_name", "")).rsplit(".", 1)[-1]] += 1

    try:
        aws.reset()
        aws.bootstrap()
        table = aws.fleet_table(
            base,
            table="bench-fleet",
            name="bench",
            event_hooks=[("before-send.dynamodb", count)],
        )
        journal = DynamoDbJournal(table, "bench-agent")
        seconds: dict[str, list[float]] = {}

        async def timed(name: str, call: Any) -> None:
            started = time.perf_counter()
            await call
            seconds.setdefault(name, []).append((time.perf_counter() - started) * 1000)

        async def run() -> tuple[Counter[str], Counter[str], int]:
            me = AgentItem(agent_id="bench-agent", host="host", pid=1, token="bench")
            await table.register(me, [], time.time())
            ops.clear()
            for n in range(LEASES):  # one iam_user lease's whole life, LEASES times
                lease = f"r/{n:04d}"
                now = time.time()
                await timed("creating", journal.creating(lease, "r", f"u{n}", now, now + 3600))
                await timed("key_created", journal.key_created(lease, "AKIAEXAMPLE"))
                await timed("activate", journal.activate(lease, now + 3600))
                await timed("extend", journal.extend(lease, now + 7200))
                await timed("revoke_now", journal.revoke_now(lease, now))
                await timed("revoking", journal.revoking(lease))
                await timed("forget", journal.forget(lease))
            lifecycle = Counter(ops)
            ops.clear()
            for n in range(LEASES):
                beat = AgentItem(agent_id="bench-agent", token="bench", beat=n + 1, leases=5)
                await timed("heartbeat", table.heartbeat(beat, time.time()))
                await timed("roster", table.roster())
            return lifecycle, Counter(ops), len(await table.roster())

        lifecycle, beats, _ = trio.run(run)
        record = Record("r/0001", "ci-role", "dyncreds-someone-ci-role-1800000000-abcd", "AKIA"
                        "EXAMPLEEXAMPLE12", "active", 1.8e9, 1.8e9 + 3600)  # fmt: skip
        record_bytes = len(str(encode_record(record, "a" * 16, "a" * 16, "ci")))
        agent_bytes = 270  # pk, sk, host, pid, token, beat, heartbeat, skew, started_at, ...
        per_lease_writes = sum(lifecycle.values()) / LEASES
        model = _model(per_lease_writes, agent_bytes)
        emit(
            "fleet",
            per_lease_lifecycle={k: v / LEASES for k, v in sorted(lifecycle.items())},
            per_heartbeat_cycle={k: v / LEASES for k, v in sorted(beats.items())},
            op_ms={k: round(statistics.median(v), 2) for k, v in sorted(seconds.items())},
            record_item_bytes=record_bytes,
            agent_item_bytes=agent_bytes,
            monthly=model,
            assumptions={
                "heartbeat_s": 30,
                "roles_per_host": ROLES_PER_HOST,
                "iam_user_ttl": "1h (extended every ~40 min), replaced at max_ttl 12h",
                "roster_reads_per_heartbeat_fleet_wide": ROSTER_READS_PER_HEARTBEAT,
                "price_per_million": {"write": PRICE_WRITE, "read": PRICE_READ},
            },
            machine=cpu_note(),
        )
    finally:
        aws.stop()


def _model(per_lease_writes: float, agent_bytes: int) -> dict[str, dict[str, float]]:
    """Steady state per month for fleets of 10, 1,000 and 10,000 hosts."""
    out = {}
    heartbeat = 30.0
    for hosts in (10, 1000, 10_000):
        beats = 3600 / heartbeat  # one UpdateItem (1 WRU) per heartbeat per host
        # A lease: extended 1.5 times an hour (1 WRU each), its other writes once in 12 h.
        lease_writes = ROLES_PER_HOST * (1.5 + (per_lease_writes - 1) / 12)
        writes = hosts * (beats + lease_writes)
        roster_rru = math.ceil(hosts * agent_bytes / 4096)  # a consistent read of it all
        reads = (3600 / check_every(heartbeat, hosts)) * hosts * roster_rru
        reads += hosts * 3600 / DEAD_AFTER  # each agent re-reads its partition (stale records)
        cost = (writes * PRICE_WRITE + reads * PRICE_READ) / 1e6 * HOURS_PER_MONTH
        out[str(hosts)] = {
            "writes_per_hour": round(writes),
            "reads_per_hour": round(reads),
            "usd_per_month": round(cost, 2),
            "usd_per_month_heartbeat_2m": round(
                ((hosts * (30 + lease_writes)) * PRICE_WRITE + reads / 4 * PRICE_READ)
                / 1e6
                * HOURS_PER_MONTH,
                2,
            ),
        }
    return out
