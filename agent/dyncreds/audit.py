"""The audit log: one JSON object per line for every credential request, revoke,
renew, rotate and root rotation, with the asking process as the kernel reports
it (SO_PEERCRED's pid and uid, /proc's exe and cmdline). Never a secret: key ids,
lease ids, role names and outcomes only.

Written off the event loop: a request only puts its record on a bounded memory
channel (a full channel drops and counts, it never makes a client wait); one
task writes what has accumulated, in a worker thread. The file is 0600 and
capped at ``max_size``; one rotated file (``.1``) is kept.
"""

from __future__ import annotations

import contextvars
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio

from dyncreds import logs
from dyncreds.protocol import rfc3339

log = logs.get("audit")

CMDLINE_MAX = 256
BUFFER = 10_000
BATCH_DELAY = 0.05


@dataclass
class Peer:
    """The process at the other end of a connection; /proc is read once, lazily."""

    pid: int
    uid: int
    user: str | None = None  # system mode: the consumer's user name
    _info: dict[str, Any] | None = field(default=None, repr=False)

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = {"pid": self.pid, "uid": self.uid, **_proc(self.pid)}
            if self.user is not None:
                self._info["user"] = self.user
        return self._info


def _proc(pid: int) -> dict[str, str | None]:
    try:
        exe: str | None = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = None
    # os.open/os.read, not open(): this runs on the event loop, once per connection
    # (the peer may be gone a moment after its answer, so it cannot wait).
    try:
        fd = os.open(f"/proc/{pid}/cmdline", os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = os.read(fd, CMDLINE_MAX * 4)
        finally:
            os.close(fd)
        text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        cmdline: str | None = text[:CMDLINE_MAX]
    except OSError:
        cmdline = None
    return {"exe": exe, "cmdline": cmdline}


# Set by the server for each connection's task: who is asking.
current_peer: contextvars.ContextVar[Peer | None] = contextvars.ContextVar(
    "dyncreds_peer", default=None
)


class AuditLog:
    def __init__(
        self,
        path: Path | None,
        max_size: int = 10 << 20,
        offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync,
    ):
        self.path = path
        self.max_size = max_size
        self.offload = offload
        self.dropped = 0
        self._send, self._receive = trio.open_memory_channel[bytes](BUFFER)
        # The hot path (every credential request) pays a dict and one msgspec
        # encode; the time text is made once a second.
        self._encode = msgspec.json.Encoder().encode
        self._second = -1
        self._stamp = ""

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def record(self, op: str, outcome: str, **fields: Any) -> None:
        """Queue one record (never blocks; a full buffer drops and counts)."""
        if self.path is None:
            return
        peer = current_peer.get()
        second = int(time.time())
        if second != self._second:
            self._second, self._stamp = second, rfc3339(second)
        fields["time"], fields["op"], fields["outcome"] = self._stamp, op, outcome
        fields["peer"] = peer.info() if peer is not None else None
        try:
            self._send.send_nowait(self._encode(fields))
        except trio.WouldBlock:
            self.dropped += 1

    async def run(self) -> None:
        """Write what has accumulated, in a worker thread, until cancelled."""
        if self.path is None:
            return
        while True:
            lines = [await self._receive.receive()]
            # Let a burst accumulate: one thread hop per BATCH_DELAY, not per request.
            await trio.sleep(BATCH_DELAY)
            while True:
                try:
                    lines.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self.offload(self._write, lines)
            except OSError as exc:
                self.dropped += len(lines)
                log.error("audit.write_failed", path=str(self.path), error=str(exc))

    def _write(self, lines: list[bytes]) -> None:
        assert self.path is not None
        try:
            if self.path.stat().st_size > self.max_size:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"\n".join(lines) + b"\n")
        finally:
            os.close(fd)


def read(path: Path) -> list[dict[str, Any]]:
    """The rotated file, then the current one; lines that are not JSON are skipped."""
    entries: list[dict[str, Any]] = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            text = part.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
    return entries
