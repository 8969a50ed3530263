"""The Unix socket server: listener set-up, peer-uid check, per-connection loop,
limits.

The door to keys that can create IAM users, so it is built like ssh-agent's:
the socket lives in a directory of mode 0700 owned by the user, the socket is
0600, and every connection's peer uid (SO_PEERCRED) must be ours even if those
modes were loosened. In system mode the socket is 0666 in a 0755 directory and
each connection's uid goes to gate.py instead: the ``[[access]]`` rules decide
every request (access.py). Each connection is bounded: 64 KiB per line, an idle
timeout between requests, a total lifetime, and a cap on connections at once
(connections.py: at the cap the connection that has waited longest for its next
request is closed, never one being answered; when all are busy, clients queue in
the kernel's backlog; running out of descriptors is survived, not logged in a loop).

Anything a client sends ends in an error response or a closed connection of
its own; nothing it sends can stop the server or reach another connection.
"""

from __future__ import annotations

import errno
import os
import socket as stdsocket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from dyncreds import audit, gate, logs, peer, protocol
from dyncreds.connections import Connections, cap_for
from dyncreds.protocol import (
    MAX_LINE,
    DyncredsError,
    Forbidden,
    Internal,
    TooLarge,
)

log = logs.get("server")

Handler = Callable[[protocol.AnyRequest], Awaitable[bytes]]


@dataclass(frozen=True)
class Limits:
    max_line: int = MAX_LINE
    idle_timeout: float = 60.0  # between requests on one connection
    request_timeout: float = 120.0  # one request, issuance included
    max_lifetime: float = 3600.0  # one connection, however busy
    max_connections: int = 512
    send_timeout: float = 30.0


class SocketSetupError(Exception):
    """The runtime directory or socket cannot be used safely; the agent must not start."""


# --------------------------------------------------------------------------- set-up


def ensure_private_dir(path: Path, public: bool = False) -> None:
    """Create the socket's directory 0700, or refuse one that is not ours and private.
    Its parent must not let anyone else swap it (``/tmp/runtime-UID`` is a name
    another user could take first): ours, or root's, or sticky like /tmp.
    ``public`` (system mode): 0755, every user may reach the socket, none may
    replace it."""
    if not path.parent.exists():
        ensure_private_dir(path.parent)  # e.g. /tmp/runtime-UID: private too
    try:
        path.mkdir(mode=0o755 if public else 0o700)
    except FileExistsError:
        pass
    parent = os.stat(path.parent)
    others_can_swap = parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX
    if parent.st_uid not in (0, os.getuid()) or others_can_swap:
        raise SocketSetupError(
            f"{path.parent}: another user could replace the agent's directory in it; "
            "set XDG_RUNTIME_DIR or DYNCREDS_SOCKET to a private place"
        )
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise SocketSetupError(f"{path}: is a symlink; refusing to put the agent socket there")
    if not stat.S_ISDIR(info.st_mode):
        raise SocketSetupError(f"{path}: is not a directory")
    if info.st_uid != os.getuid():
        raise SocketSetupError(f"{path}: owned by uid {info.st_uid}, not by us ({os.getuid()})")
    if stat.S_IMODE(info.st_mode) & (0o022 if public else 0o077):
        expected = "755" if public else "700"
        raise SocketSetupError(
            f"{path}: mode {stat.S_IMODE(info.st_mode):04o} lets others in; expected 0{expected} "
            f"(run `chmod {expected} {path}`)"
        )


def _remove_stale_socket(path: Path) -> None:
    """A leftover socket file is replaced only if it is a socket nobody answers on."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise SocketSetupError(f"{path}: exists and is not a socket; refusing to replace it")
    probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        log.info("agent.stale_socket_removed", path=str(path))
        return
    except OSError as exc:
        raise SocketSetupError(f"{path}: cannot probe the existing socket: {exc}") from None
    finally:
        probe.close()
    raise SocketSetupError(f"another dyncreds agent is already listening on {path}")


def bind_unix(path: Path, backlog: int = 1024, public: bool = False) -> stdsocket.socket:
    """``public`` (system mode): a 0666 socket in a 0755 directory - every local user
    may connect, and the access rules decide each request."""
    ensure_private_dir(path.parent, public)
    _remove_stale_socket(path)
    sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o111 if public else 0o177)  # born with its final mode
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o666 if public else 0o600)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):
            raise SocketSetupError(
                f"{path}: socket path too long (Unix sockets allow ~107 bytes)"
            ) from None
        raise SocketSetupError(f"{path}: cannot listen: {exc.strerror or exc}") from None
    return sock


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel says
    (SO_PEERCRED, through ``peer.unix_peer``); uid -1, nobody's, where it has none."""
    found = peer.unix_peer(sock)
    return (found.pid, found.uid, found.gid) if found is not None else (0, -1, -1)


# --------------------------------------------------------------------------- serving


class Server:
    def __init__(
        self,
        handle: Handler,
        limits: Limits = Limits(),
        uid: int | None = None,
        door: gate.Door | None = None,
        audit: Callable[..., None] = lambda op, outcome, **fields: None,
    ):
        """``door``: system mode - every uid may connect, and each request is
        decided by the access rules (the handler checks ``gate.current``).
        ``audit``: the audit log's record(op, outcome); refusals are recorded with
        the peer."""
        self.handle = handle
        self.door = door
        self.limits = limits
        self.uid = os.getuid() if uid is None else uid
        self.active = 0
        self.counters: dict[str, int] = {
            "connections": 0,
            "requests": 0,
            "refused": 0,
            "bad_requests": 0,
        }
        self._held = Connections(cap_for(limits.max_connections), limits.idle_timeout, "server")
        self._refusals = logs.Throttle(log)
        self._idle = trio.Event()
        self._idle.set()
        self._receiving: set[trio.CancelScope] = set()
        self.draining = False
        self.audit = audit

    async def serve(
        self,
        sock: stdsocket.socket,
        connections: trio.Nursery,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until cancelled. Connections run in the caller's ``connections``
        nursery, so cancelling this task stops accepting while requests in flight
        finish (see ``drain``)."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        async with listener, trio.open_nursery() as sweeper:
            sweeper.start_soon(self._held.sweep)
            await self._held.serve(listener, self._connection, connections, task_status=task_status)

    def drain(self) -> None:
        """Shutting down: connections close after the request they are handling;
        those waiting for a request close now."""
        self.draining = True
        for scope in list(self._receiving):
            scope.cancel()
        self._held.close_waiting()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def _connection(self, stream: trio.SocketStream) -> None:
        # Nothing is set up until the client speaks: a flood of silent connections
        # costs a wait each, and the gate closes the oldest of them to make room.
        self._held.waiting(stream)
        try:
            await trio.lowlevel.wait_readable(stream.socket)
        except trio.ClosedResourceError:
            return
        except BaseException:
            stream.socket.close()  # cancelled (the agent is stopping)
            raise
        self.active += 1
        self._idle = trio.Event() if self.active == 1 else self._idle
        self.counters["connections"] += 1
        # One cancel scope per connection whose deadline moves with what the
        # connection is doing (waiting for a request, handling it, sending the
        # answer): cheaper than a new timeout scope per step, and a connection
        # that overstays any of them is simply closed.
        timer = trio.CancelScope()
        try:
            with trio.move_on_after(self.limits.max_lifetime), timer:
                await self._converse(stream, timer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        except Exception:
            # A bug in one request must not take down the server.
            log.exception("request.connection_error")
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()
            self.active -= 1
            if self.active == 0:
                self._idle.set()

    async def _send(self, stream: trio.SocketStream, timer: trio.CancelScope, data: bytes) -> None:
        timer.deadline = trio.current_time() + self.limits.send_timeout
        await stream.send_all(data)

    async def _converse(self, stream: trio.SocketStream, timer: trio.CancelScope) -> None:
        pid, uid, _ = peer_credentials(stream.socket)
        audit.current_peer.set(audit.Peer(pid, uid))  # for this connection's records
        if self.door is not None:
            gate.current.set(self.door.connection(uid))  # for this connection's requests
        elif uid != self.uid:
            self.counters["refused"] += 1
            self._refusals.warning("request.peer_refused", kind=str(uid), uid=uid, pid=pid)
            self.audit("connect", "forbidden")
            await self._send(
                stream, timer, protocol.error(Forbidden(f"this agent serves uid {self.uid} only"))
            )
            return
        buffer = bytearray()
        limits = self.limits
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > limits.max_line:
                    await self._too_large(stream, timer)
                    return
                if self.draining:
                    return
                self._held.waiting(stream)  # until a whole line arrives
                timer.deadline = trio.current_time() + limits.idle_timeout
                self._receiving.add(timer)
                try:
                    chunk = await stream.receive_some(65536)
                finally:
                    self._receiving.discard(timer)
                if not chunk:
                    return  # the client closed its side
                buffer += chunk
                continue
            if newline > limits.max_line:
                await self._too_large(stream, timer)
                return
            self._held.busy(stream)
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            if not line.strip():
                continue
            self.counters["requests"] += 1
            timer.deadline = trio.current_time() + limits.request_timeout
            await self._send(stream, timer, await self._respond(line))

    async def _too_large(self, stream: trio.SocketStream, timer: trio.CancelScope) -> None:
        self.counters["bad_requests"] += 1
        await self._send(
            stream,
            timer,
            protocol.error(
                TooLarge(
                    f"request line longer than {self.limits.max_line} bytes; closing the connection"
                )
            ),
        )

    async def _respond(self, line: bytes) -> bytes:
        try:
            request = protocol.decode_request(line)
        except DyncredsError as exc:
            self.counters["bad_requests"] += 1
            return protocol.error(exc)
        try:
            response = await self.handle(request)
        except DyncredsError as exc:
            log.debug("request.done", op=type(request).__name__, outcome=exc.code)
            return protocol.error(exc)
        except Exception as exc:
            log.exception("request.bug", op=type(request).__name__)
            return protocol.error(Internal(f"internal error: {type(exc).__name__}"))
        log.debug("request.done", op=type(request).__name__, outcome="ok")
        return response
