"""A full audit buffer drops and counts, and never makes a request wait: the writer
is held (its disk is slow), the buffer fills, and every record beyond it is
counted in ``dropped`` (what `status` reports as audit_dropped), on trio's mock
clock with the real AuditLog writing a real file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from dyncreds import audit
from dyncreds.audit import AuditLog


async def test_a_full_buffer_drops_and_counts_without_blocking(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    disk_free = trio.Event()
    writes = 0

    async def slow_disk(write: Callable[..., int], lines: list[bytes]) -> Any:
        nonlocal writes
        writes += 1
        await disk_free.wait()
        return write(lines)

    path = tmp_path / "audit.log"
    log = AuditLog(path, offload=slow_disk)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.run)
        log.record("credentials", "ok", role="first")
        await trio.sleep(1)  # the writer took it and is held at the disk
        assert writes == 1
        for i in range(audit.BUFFER + 5):
            log.record("credentials", "ok", role=f"r{i}")  # returns at once, always
        assert log.dropped == 5
        # A request that must wait for its record is refused at once, not queued.
        with trio.fail_after(0.001):
            assert await log.record_and_wait("credentials", "ok", role="required") is False
        assert log.dropped == 6
        disk_free.set()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 1 + audit.BUFFER
    roles = [json.loads(line)["role"] for line in lines]
    assert roles[0] == "first" and roles[-1] == f"r{audit.BUFFER - 1}"
    assert log.dropped == 6  # what was written is not counted again
