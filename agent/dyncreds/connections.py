"""How many connections a listener holds, and which go first: one policy for the
agent's Unix socket (server.py) and the endpoints' loopback HTTP (httpserve.py).

Any local process can open connections and hold them open; with the usual limit
of 1,024 descriptors a few thousand idle ones used to lock every client out for
minutes. So:

- the soft ``RLIMIT_NOFILE`` is raised to the hard one at start (``raise_nofile``),
  and the cap on connections is derived from what remains (``cap_for``);
- a connection *waits* from the end of its last answer until its next request is
  complete (idle, or still sending its headers); it is *busy* while answered;
- at the cap, a new connection closes the one that has waited longest, never a
  busy one; when every connection is busy, accepting pauses (the kernel queues);
- a connection that waits longer than ``wait_timeout`` is closed by a sweep that
  only looks at the oldest waiter (the table is ordered by the time waiting began);
- ``accept`` failing for lack of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM)
  closes the longest waiter and retries, or backs off up to a second when none
  waits; logged at most once per interval, with a count.
"""

from __future__ import annotations

import errno
import os
import resource
import socket as stdsocket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from dyncreds import logs

log = logs.get("connections")

CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKOFF_MAX = 1.0
BURST = 256  # connections accepted per pass of the event loop, at most
# Descriptors kept for everything else a process holds (journal, logs, AWS
# connections, the agent link), out of the soft limit.
RESERVED_FDS = 64

Handler = Callable[[trio.SocketStream], Awaitable[None]]


def raise_nofile() -> int:
    """Raise the soft descriptor limit to the hard one; the soft limit now."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ValueError, OSError):
        return 1024


def cap_for(wanted: int) -> int:
    """``wanted``, or fewer where the descriptor limit could not hold them all."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, max(8, (soft - RESERVED_FDS) // 2))


class Connections:
    """The connections of one server: counted, capped, the waiters in order."""

    def __init__(self, limit: int, wait_timeout: float, area: str):
        self.limit = limit
        self.wait_timeout = wait_timeout
        self.counters = {"closed_waiting": 0, "accept_failures": 0}
        self._open: set[trio.SocketStream] = set()
        # stream -> when it began waiting; insertion order is waiting order.
        self._waiting: OrderedDict[trio.SocketStream, float] = OrderedDict()
        self._room = trio.Event()
        self._backoff = 0.0
        self._log = logs.Throttle(logs.get(area))

    @property
    def open(self) -> int:
        return len(self._open)

    def waiting(self, stream: trio.SocketStream) -> None:
        """The connection waits for its next request (kept in place if it already was)."""
        if stream not in self._waiting:
            self._waiting[stream] = trio.current_time()
            self._room.set()

    def busy(self, stream: trio.SocketStream) -> None:
        """A whole request arrived: the connection is not closed to make room."""
        self._waiting.pop(stream, None)

    def _close(self, stream: trio.SocketStream) -> None:
        self._waiting.pop(stream, None)
        self._open.discard(stream)
        self.counters["closed_waiting"] += 1
        # Closing the socket frees its descriptor now and wakes its task, which is
        # blocked in a receive (ClosedResourceError) and ends.
        stream.socket.close()

    def make_room(self) -> bool:
        """Close the connection that has waited longest; False when none waits."""
        if not self._waiting:
            return False
        self._close(next(iter(self._waiting)))
        return True

    def close_waiting(self) -> None:
        """Shutting down: every connection waiting for a request closes now."""
        while self.make_room():
            pass

    async def sweep(self) -> None:
        """Close connections that waited longer than ``wait_timeout``, until cancelled."""
        while True:
            await trio.sleep(max(self.wait_timeout / 4, 0.05))
            expired = trio.current_time() - self.wait_timeout
            while self._waiting:
                stream, since = next(iter(self._waiting.items()))
                if since > expired:
                    break
                self._close(stream)

    async def serve(
        self,
        listener: trio.SocketListener,
        handler: Handler,
        nursery: trio.Nursery,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until cancelled, each connection a task in ``nursery``.

        A burst is accepted in one pass of the event loop, through a second handle
        on the listening socket: trio's ``accept`` yields after every connection,
        and behind a flood of thousands the one client that matters waited for a
        pass of the loop per connection ahead of it."""
        raw = stdsocket.socket(fileno=os.dup(listener.socket.fileno()))
        raw.setblocking(False)
        task_status.started()
        with raw:
            while True:
                await trio.lowlevel.wait_readable(raw)
                await self._accept_burst(raw, handler, nursery)

    async def _accept_burst(
        self, raw: stdsocket.socket, handler: Handler, nursery: trio.Nursery
    ) -> None:
        for _ in range(BURST):
            try:
                sock, _ = raw.accept()
            except (BlockingIOError, InterruptedError):
                self._backoff = 0.0
                return
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                await self._out_of_descriptors(exc)
                return
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            # At the cap: close the longest waiter for it (never itself); when every
            # connection is busy, it waits, and nothing more is accepted meanwhile.
            try:
                while len(self._open) >= self.limit and not self.make_room():
                    self._room = trio.Event()
                    await self._room.wait()
            except BaseException:
                sock.close()
                raise
            self._open.add(stream)
            nursery.start_soon(self._run, handler, stream)
        await trio.lowlevel.checkpoint()  # (a long burst lets the connections run too)

    async def _out_of_descriptors(self, exc: OSError) -> None:
        self.counters["accept_failures"] += 1
        self._log.warning(
            "connections.accept_failed",
            error=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
            open=len(self._open),
        )
        if self.make_room():
            await trio.lowlevel.checkpoint()
        else:
            self._backoff = min(self._backoff * 2 or 0.01, BACKOFF_MAX)
            await trio.sleep(self._backoff)

    async def _run(self, handler: Handler, stream: trio.SocketStream) -> None:
        try:
            await handler(stream)
        finally:
            self._waiting.pop(stream, None)
            self._open.discard(stream)
            self._room.set()
