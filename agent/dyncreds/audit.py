"""The audit log: one JSON object per line for every credential request, revoke,
renew, rotate, root rotation, lock and unlock, every refusal, the endpoints'
hand-outs (their ``report``s) and fleet takeovers, with the asking process as the
kernel reports it (SO_PEERCRED's pid and uid, /proc's exe and cmdline). Never a
secret: key ids, lease ids, role names and outcomes only.

Written off the event loop: a request only puts its record on a bounded memory
channel (a full channel drops and counts, it never makes a client wait); one
task writes what has accumulated, in a worker thread. The file is 0600 and
capped at ``max_size``; one rotated file (``.1``) is kept.
"""

from __future__ import annotations

import contextvars
import errno
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
from dyncreds.protocol import parse_rfc3339, rfc3339

log = logs.get("audit")

CMDLINE_MAX = 256
SECRET_FLAGS = frozenset({"--code"})  # recorded command lines never show their values
SECRET_FLAGS_EQ = tuple(f"{flag}=" for flag in SECRET_FLAGS)
MASK = "******"
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
        args = [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]
        cmdline: str | None = " ".join(mask(args))[:CMDLINE_MAX]
    except OSError:
        cmdline = None
    return {"exe": exe, "cmdline": cmdline}


def mask(args: list[str]) -> list[str]:
    """A command line as it may be recorded: the value of ``--code`` (an MFA code,
    e.g. ``dyncreds unlock --code 123456``) is masked."""
    out = []
    after_flag = False
    for arg in args:
        if after_flag:
            out.append(MASK)
        elif arg.startswith(SECRET_FLAGS_EQ):
            out.append(arg.split("=", 1)[0] + "=" + MASK)
        else:
            out.append(arg)
        after_flag = arg in SECRET_FLAGS
    return out


# Set by the server for each connection's task: who is asking.
current_peer: contextvars.ContextVar[Peer | None] = contextvars.ContextVar(
    "dyncreds_peer", default=None
)


@dataclass
class Waiter:
    """A record whose request waits until it is on disk (``[audit] required``)."""

    done: trio.Event = field(default_factory=trio.Event)
    written: bool = False


class AuditLog:
    def __init__(
        self,
        path: Path | None,
        max_size: int = 10 << 20,
        offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync,
        required: bool = False,
    ):
        self.path = path
        self.max_size = max_size
        self.offload = offload
        self.required = required and path is not None
        self.dropped = 0
        self.error: str | None = None  # the last write's failure, until one succeeds
        self._send, self._receive = trio.open_memory_channel[tuple[bytes, Waiter | None]](BUFFER)
        self._pending: list[tuple[bytes, Waiter | None]] = []
        # The hot path (every credential request) pays a dict and one msgspec
        # encode; the time text is made once a second.
        self._encode = msgspec.json.Encoder().encode
        self._second = -1
        self._stamp = ""

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _line(self, op: str, outcome: str, fields: dict[str, Any]) -> bytes:
        peer = current_peer.get()
        second = int(time.time())
        if second != self._second:
            self._second, self._stamp = second, rfc3339(second)
        fields["time"], fields["op"], fields["outcome"] = self._stamp, op, outcome
        fields["peer"] = peer.info() if peer is not None else None
        return self._encode(fields)

    def record(self, op: str, outcome: str, **fields: Any) -> None:
        """Queue one record (never blocks; a full buffer drops and counts)."""
        if self.path is None:
            return
        try:
            self._send.send_nowait((self._line(op, outcome, fields), None))
        except trio.WouldBlock:
            self.dropped += 1

    async def record_and_wait(self, op: str, outcome: str, **fields: Any) -> bool:
        """Queue one record and wait until it is written: False if it could not be
        (``[audit] required`` then refuses the request)."""
        if self.path is None:
            return True
        waiter = Waiter()
        try:
            self._send.send_nowait((self._line(op, outcome, fields), waiter))
        except trio.WouldBlock:
            self.dropped += 1
            return False
        await waiter.done.wait()
        return waiter.written

    async def run(self) -> None:
        """Write what has accumulated, in a worker thread, until cancelled; then
        (shielded) what is still queued: a SIGTERM loses no line."""
        if self.path is None:
            return
        try:
            while True:
                self._pending.append(await self._receive.receive())
                if self._pending[0][1] is None:
                    # Let a burst accumulate: one thread hop per BATCH_DELAY, not per
                    # request (a request that waits for its record is not delayed).
                    await trio.sleep(BATCH_DELAY)
                self._take_queued()
                batch, self._pending = self._pending, []
                await self._flush(batch, self.offload)
        finally:
            with trio.CancelScope(shield=True):
                self._take_queued()
                batch, self._pending = self._pending, []
                if batch:
                    await self._flush(batch, _inline)

    def _take_queued(self) -> None:
        while True:
            try:
                self._pending.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def _flush(
        self,
        batch: list[tuple[bytes, Waiter | None]],
        offload: Callable[..., Awaitable[Any]],
    ) -> None:
        try:
            whole = await offload(self._write, [line for line, _ in batch])
            self.error = None
        except OSError as exc:
            whole = exc.whole if isinstance(exc, ShortWrite) else 0
            self.error = str(exc.strerror or exc)
            log.error("audit.write_failed", path=str(self.path), error=self.error)
        self.dropped += len(batch) - whole
        for i, (_, waiter) in enumerate(batch):
            if waiter is not None:
                waiter.written = i < whole
                waiter.done.set()

    def _write(self, lines: list[bytes]) -> int:
        """Append whole lines; a short write (a full disk, a file-size limit) is cut
        back to the last whole line, so a record is never merged with the next.
        Returns how many lines are on disk; raises ShortWrite if not all."""
        assert self.path is not None
        try:
            if self.path.stat().st_size > self.max_size:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            start = os.fstat(fd).st_size
            data = b"\n".join(lines) + b"\n"
            try:
                written = os.write(fd, data)
                error = None
            except OSError as exc:
                written, error = 0, exc
            if written == len(data):
                return len(lines)
            keep = data.rfind(b"\n", 0, written) + 1  # 0: not even one whole line
            os.ftruncate(fd, start + keep)  # the file ends with a whole line again
            reason = error.strerror if error is not None and error.strerror else "short write"
            raise ShortWrite(reason, data[:keep].count(b"\n"))
        finally:
            os.close(fd)


class ShortWrite(OSError):
    """Only the first ``whole`` lines of a batch reached the file."""

    def __init__(self, reason: str, whole: int):
        super().__init__(errno.EFBIG, reason)
        self.whole = whole


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    """At shutdown, the last batch is written on the loop (no thread to hop to)."""
    return fn(*args)


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


def entry_time(entry: dict[str, Any]) -> float:
    """When a read entry was recorded (0 for a line without a readable time, so a
    `since` filter leaves it out)."""
    try:
        return parse_rfc3339(str(entry.get("time")))
    except ValueError:
        return 0.0
