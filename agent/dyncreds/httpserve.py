"""HTTP/1.1 connections for the credential endpoints (endpoint.py answers them).

h11 parses every request - a fresh ``h11.Connection`` per request, handed the
bytes already read past the previous one; nothing here parses HTTP by hand. Each
connection is bounded like the Unix socket's: header size, body size, a deadline per request
and a lifetime, all on one moving cancel scope; how many connections are held,
which close first and how long one may wait for its request is connections.py's.

On a loopback listener a connection is served only if the kernel says its other
end belongs to the endpoint's own uid (peer.tcp_peer_uid, asked once per
connection): another local user, or an owner the kernel cannot name, gets one 403
and the connection closes. IMDS answers leave with a hop limit of 1 (IPv4 TTL and
IPv6 hops), as EC2's do.
Answers are written here: three fixed headers and a body with its length, the
heads built once - h11's ``send`` state machine cost more than everything else a
cached answer does.
"""

from __future__ import annotations

import socket as stdsocket
from http import HTTPStatus

import h11
import trio

from dyncreds import logs, peer
from dyncreds.connections import Connections, cap_for
from dyncreds.endpoint import Endpoint, Reply, error_reply

log = logs.get("endpoint")

MAX_HEADERS = 8 * 1024
MAX_BODY = 16 * 1024
# A request must arrive and be answered within this (a cold issuance may take
# issue_timeout, 40 s by default; SDKs retry sooner anyway).
REQUEST_BUDGET = 60.0
LIFETIME = 600.0
MAX_CONNECTIONS = 512
# A connection must deliver its next whole request within this (idle keep-alive
# and slow headers alike); SDKs send theirs at once and reconnect when closed.
WAIT_TIMEOUT = 15.0


def _hop_limit(sock: trio.socket.SocketType) -> None:
    try:
        if sock.family == stdsocket.AF_INET6:
            sock.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_UNICAST_HOPS, 1)
        sock.setsockopt(stdsocket.IPPROTO_IP, stdsocket.IP_TTL, 1)
    except OSError:
        pass  # (an IPv6-only socket has no IPv4 TTL)


async def serve_connection(
    endpoint: Endpoint, stream: trio.SocketStream, held: Connections | None = None
) -> None:
    """One HTTP/1.1 connection, keep-alive, bounded in size and time."""
    if held is not None:
        # Nothing is set up for a connection until it speaks: a flood of silent
        # ones costs a wait each, and the oldest is closed to make room.
        held.waiting(stream)
        try:
            await trio.lowlevel.wait_readable(stream.socket)
        except trio.ClosedResourceError:
            return
    try:
        client = "{}:{}".format(*stream.socket.getpeername()[:2])
    except OSError:
        client = "?"
    if endpoint.mode == "imds":  # IMDSv2's answers do not survive a hop (a container's NAT)
        _hop_limit(stream.socket)
    who = _Peer(client, held)
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
                keep_alive = await _one_request(endpoint, conn, stream, who, (timer, end))
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


class _Peer:
    """Who a connection is: its address, and its owner once its first request came
    (asked then, not at accept: a flood of idle connections costs no lookups)."""

    __slots__ = ("checked", "client", "held", "uid")

    def __init__(self, client: str, held: Connections | None):
        self.client = client
        self.held = held
        self.uid: int | None = None
        self.checked = False

    def refused(self, endpoint: Endpoint, stream: trio.SocketStream) -> bool:
        """Is this connection's owner someone else (or unknown)? Asked once."""
        if self.checked:
            return False
        self.checked = True
        if not endpoint.peer_check:
            return False
        self.uid = peer.tcp_peer_uid(stream.socket)  # type: ignore[arg-type]
        return self.uid != endpoint.uid


async def _one_request(
    endpoint: Endpoint,
    conn: h11.Connection,
    stream: trio.SocketStream,
    who: _Peer,
    timer: tuple[trio.CancelScope, float],
) -> bool:
    """Read one request and answer it; False when the connection should close."""
    held = who.held
    if held is not None:
        held.waiting(stream)
    scope, end = timer
    # One budget for a request to arrive and be answered. The deadline is moved
    # only when that changes it by more than a second: moving a trio deadline on
    # every request of a busy keep-alive connection cost more than the answer.
    deadline = min(end, trio.current_time() + REQUEST_BUDGET)
    if abs(deadline - scope.deadline) > 1.0:
        scope.deadline = deadline
    try:
        got = await _read_request(conn, stream)
    except h11.RemoteProtocolError as exc:
        got = error_reply(exc.error_status_hint, "BadRequest", "malformed or oversized request")
    if isinstance(got, Reply):
        await _send(stream, got, False)
        return False
    if got is None:
        return False
    if held is not None:
        held.busy(stream)
    if who.refused(endpoint, stream):
        await _send(stream, endpoint.refuse_peer(who.uid, who.client), False)
        return False
    request, headers = got
    keep_alive = _keep_alive(request.http_version, headers)
    reply = await endpoint.answer(request.method, request.target, headers, who.client, who.uid)
    await _send(stream, reply, keep_alive)
    return keep_alive


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request, list[tuple[bytes, bytes]]] | Reply | None:
    """The next whole request and its headers; a Reply refusing it; or None when
    the client closed the connection."""
    request: h11.Request | None = None
    headers: list[tuple[bytes, bytes]] = []
    size = 0
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
                return error_reply(431, "TooLarge", "headers too large")
            request = event
            size = 0
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                return error_reply(413, "TooLarge", "request body too large")
        elif isinstance(event, h11.EndOfMessage):
            return (request, headers) if request is not None else None
        elif isinstance(event, h11.ConnectionClosed):
            return None


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
    held = Connections(cap_for(MAX_CONNECTIONS), WAIT_TIMEOUT, "endpoint")

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await serve_connection(endpoint, stream, held)
        except Exception:
            log.exception("endpoint.connection_error")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(held.sweep)
        for listener in listeners:
            await nursery.start(held.serve, listener, handler, nursery)
        task_status.started(listeners)


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listeners on ``host:port``; a host that is not an address of this machine is
    refused by the kernel (EADDRNOTAVAIL), which is what we want."""
    listeners: list[trio.SocketListener] = await trio.open_tcp_listeners(port, host=host)
    return listeners


def bound_port(listeners: list[trio.SocketListener]) -> int:
    port: int = listeners[0].socket.getsockname()[1]
    return port
