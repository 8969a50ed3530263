"""HTTP/1.1 connections for the credential endpoints (endpoint.py answers them).

h11 parses every request - a fresh ``h11.Connection`` per request, handed the
bytes already read past the previous one; nothing here parses HTTP by hand. Each
connection is bounded like the Unix socket's: header size, body size, a deadline per request
and a lifetime, all on one moving cancel scope.
Answers are written here: three fixed headers and a body with its length, the
heads built once - h11's ``send`` state machine cost more than everything else a
cached answer does.
"""

from __future__ import annotations

import socket as stdsocket
from http import HTTPStatus

import h11
import trio

from dyncreds import logs
from dyncreds.endpoint import Endpoint, Reply, error_reply

log = logs.get("endpoint")

MAX_HEADERS = 8 * 1024
MAX_BODY = 16 * 1024
# A request must arrive and be answered within this (a cold issuance may take
# issue_timeout, 40 s by default; SDKs retry sooner anyway).
REQUEST_BUDGET = 60.0
LIFETIME = 600.0


async def serve_connection(
    endpoint: Endpoint, stream: trio.SocketStream, hop_limit: bool = False
) -> None:
    """One HTTP/1.1 connection, keep-alive, bounded in size and time."""
    try:
        peer = "{}:{}".format(*stream.socket.getpeername()[:2])
    except OSError:
        peer = "?"
    if hop_limit:  # IMDSv2's answers do not survive a hop (a container's NAT)
        try:
            stream.socket.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_TTL, 1)
        except OSError:
            pass
    pending = b""
    # One scope for the connection's every deadline (idle, answering, lifetime),
    # moved as it goes: when one passes, the connection ends.
    timer = trio.CancelScope()
    end = trio.current_time() + LIFETIME
    with timer:
        try:
            while True:
                conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
                if pending:
                    conn.receive_data(pending)
                keep_alive = await _one_request(endpoint, conn, stream, peer, (timer, end))
                if not keep_alive:
                    break
                pending, closed = conn.trailing_data
                if closed:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    with trio.move_on_after(1) as cleanup:
        cleanup.shield = True
        await stream.aclose()


async def _one_request(
    endpoint: Endpoint,
    conn: h11.Connection,
    stream: trio.SocketStream,
    peer: str,
    timer: tuple[trio.CancelScope, float],
) -> bool:
    """Read one request and answer it; False when the connection should close."""
    request: h11.Request | None = None
    headers: list[tuple[bytes, bytes]] = []
    size = 0
    scope, end = timer
    # One budget for a request to arrive and be answered. The deadline is moved
    # only when that changes it by more than a second: moving a trio deadline on
    # every request of a busy keep-alive connection cost more than the answer.
    deadline = min(end, trio.current_time() + REQUEST_BUDGET)
    if abs(deadline - scope.deadline) > 1.0:
        scope.deadline = deadline
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                # h11 bounds a request still arriving; one that came in one
                # piece is measured here.
                headers = list(event.headers)  # (a Sequence: iterated once, here)
                size = len(event.target) + sum(len(k) + len(v) for k, v in headers)
                if size > MAX_HEADERS:
                    await _send(stream, error_reply(431, "TooLarge", "headers too large"), False)
                    return False
                request = event
                size = 0
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    await _send(
                        stream, error_reply(413, "TooLarge", "request body too large"), False
                    )
                    return False
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return False
    except h11.RemoteProtocolError as exc:
        error = error_reply(exc.error_status_hint, "BadRequest", "malformed or oversized request")
        await _send(stream, error, False)
        return False
    if request is None:
        return False
    keep_alive = _keep_alive(request.http_version, headers)
    reply = await endpoint.answer(request.method, request.target, headers, peer)
    await _send(stream, reply, keep_alive)
    return keep_alive


def _keep_alive(http_version: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """HTTP/1.1 keeps the connection unless the client says ``close``; 1.0 closes."""
    if http_version != b"1.1":
        return False
    return not any(name == b"connection" and b"close" in value.lower() for name, value in headers)


_HEADS: dict[tuple[int, str, int, bool], bytes] = {}


def _head(reply: Reply, keep_alive: bool) -> bytes:
    key = (reply.status, reply.content_type, len(reply.body), keep_alive)
    head = _HEADS.get(key)
    if head is None:
        if len(_HEADS) >= 256:
            _HEADS.clear()
        reason = HTTPStatus(reply.status).phrase if reply.status in _STATUSES else ""
        head = _HEADS[key] = (
            f"HTTP/1.1 {reply.status} {reason}\r\n"
            f"Content-Type: {reply.content_type}\r\n"
            f"Content-Length: {len(reply.body)}\r\n"
            "Cache-Control: no-store\r\n" + ("" if keep_alive else "Connection: close\r\n") + "\r\n"
        ).encode("ascii")
    return head


_STATUSES = frozenset(s.value for s in HTTPStatus)


async def _send(stream: trio.SocketStream, reply: Reply, keep_alive: bool) -> None:
    await stream.send_all(_head(reply, keep_alive) + reply.body)


async def serve(
    endpoint: Endpoint,
    listeners: list[trio.SocketListener],
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled. A failing connection ends alone, never the server."""

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await serve_connection(endpoint, stream, hop_limit=endpoint.mode == "imds")
        except Exception:
            log.exception("endpoint.connection_error")

    await trio.serve_listeners(handler, listeners, task_status=task_status)


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listeners on ``host:port``; a host that is not an address of this machine is
    refused by the kernel (EADDRNOTAVAIL), which is what we want."""
    listeners: list[trio.SocketListener] = await trio.open_tcp_listeners(port, host=host)
    return listeners


def bound_port(listeners: list[trio.SocketListener]) -> int:
    port: int = listeners[0].socket.getsockname()[1]
    return port
