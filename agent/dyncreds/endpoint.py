"""Credential endpoints on loopback HTTP, for what cannot run the shim: the ECS
container-credentials protocol (``exec``, ``serve``) and IMDSv2 (``serve --imds``).

Never part of the agent, which listens only on its Unix socket: a process of the
user's (``dyncreds exec`` or ``serve``) runs this, and answers every request from
the agent's current lease over one persistent connection to the agent socket, so
a program that runs for a day refreshes by itself across lease replacements and
never holds a static key.

HTTP is h11 (sans-IO; no hand-written parsing) on trio sockets. Each connection is
bounded like the Unix socket's: header size, body size, an idle deadline, a
request deadline and a lifetime. Every request must name a loopback ``Host``
(DNS rebinding) and carry the token: ECS's ``Authorization`` header, compared in
constant time, or an IMDSv2 session token obtained with PUT. Tokens and
credentials are never logged.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import logging
import secrets
import socket as stdsocket
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

import h11
import trio

from dyncreds import logs
from dyncreds.protocol import rfc3339

log = logs.get("endpoint")

MAX_HEADERS = 8 * 1024
MAX_BODY = 16 * 1024
IDLE_TIMEOUT = 30.0
REQUEST_TIMEOUT = 55.0  # a cold issuance may take this long; SDKs retry sooner anyway
LIFETIME = 600.0
IMDS_TOKEN_TTL_MAX = 21600
ANSWER_CACHE = 1.0  # seconds an agent answer is reused for
# ...and at most this old while a refresh is in flight (the agent's answers keep
# min_remaining, a minute or more, so a few seconds' staleness is harmless).
ANSWER_STALE = 5.0
IMDS_TOKENS_MAX = 1024
ECS_PATH = "/role/"
IMDS_CREDS = "/latest/meta-data/iam/security-credentials/"
IMDS_REGION = "/latest/meta-data/placement/region"
IMDS_ZONE = "/latest/meta-data/placement/availability-zone"

# The agent's error codes as HTTP statuses an SDK reports.
STATUS_OF = {
    "unknown_role": 404,
    "forbidden": 403,
    "locked": 503,
    "upstream": 502,
    "unavailable": 503,
    "not_running": 503,
}


class AgentDown(Exception):
    """The agent did not answer on its socket."""


class AgentLink:
    """One persistent connection to the agent socket, one request at a time."""

    def __init__(self, path: str):
        self.path = path
        self._stream: trio.SocketStream | None = None
        self._buffer = b""
        self._lock = trio.Lock()

    async def credentials(self, role: str) -> dict[str, Any]:
        """The agent's response to ``credentials`` (ok or error), as a dict."""
        line = json.dumps({"op": "credentials", "role": role}).encode() + b"\n"
        async with self._lock:
            for attempt in (1, 2):  # a connection the agent closed is reopened once
                try:
                    return await self._exchange(line)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    await self.aclose()
                    if attempt == 2:
                        raise AgentDown(f"the dyncreds agent is not running ({exc})") from None
                except BaseException:
                    # Cancelled mid-answer: the stream's position is unknown; start over.
                    await self.aclose()
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, line: bytes) -> dict[str, Any]:
        if self._stream is None:
            self._stream = await trio.open_unix_socket(self.path)
            self._buffer = b""
        await self._stream.send_all(line)
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise trio.BrokenResourceError("the agent closed the connection")
            self._buffer += chunk
        answer, _, self._buffer = self._buffer.partition(b"\n")
        result: dict[str, Any] = json.loads(answer)
        return result

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()


@functools.lru_cache(maxsize=256)  # a client sends the same Host on every request
def loopback_host(host_header: str, extra: frozenset[str] = frozenset()) -> bool:
    """Is this ``Host`` header loopback (or ``localhost``, or an address we listen on)?"""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost" or host in extra:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_COUNTER_NAMES = {status: f"http_{status}" for status in (200, 401, 403, 404, 405, 503)}


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, json.dumps({"code": code, "message": message}).encode())


@dataclass
class Endpoint:
    """The HTTP side: one role, one token (ECS) or IMDSv2 session tokens."""

    link: AgentLink
    role: str
    mode: Literal["ecs", "imds"] = "ecs"
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    extra_hosts: frozenset[str] = frozenset()
    region: str | None = None  # IMDS answers placement/region with it
    counters: dict[str, int] = field(default_factory=dict)
    # Is the debug log on? Asked once: every request would otherwise ask.
    debug: bool = field(default_factory=lambda: log.logger.isEnabledFor(logging.DEBUG))
    _imds_tokens: dict[str, float] = field(default_factory=dict)
    _cached: tuple[float, dict[str, Any]] | None = None
    _fetching: trio.Lock = field(default_factory=trio.Lock)
    # The last ECS answer's body, encoded once per agent answer (not per request).
    _ecs_body: tuple[dict[str, Any], bytes] | None = None

    @property
    def path(self) -> str:
        return f"{ECS_PATH}{self.role}"

    def count(self, status: int) -> None:
        name = _COUNTER_NAMES.get(status) or f"http_{status}"
        self.counters[name] = self.counters.get(name, 0) + 1

    # ---------------------------------------------------------------- routing

    async def answer(self, request: h11.Request, peer: str) -> Reply:
        # h11 gives header names lower-cased already.
        headers = {k.decode(): v.decode(errors="replace") for k, v in request.headers}
        method, target = request.method.decode(), request.target.decode(errors="replace")
        if not loopback_host(headers.get("host", ""), self.extra_hosts):
            reply = _error(403, "HostNotAllowed", "the Host header must be a loopback address")
        elif self.mode == "imds":
            reply = await self._imds(method, target, headers)
        else:
            reply = await self._ecs(method, target, headers)
        self.count(reply.status)
        if reply.status >= 400:
            log.warning(
                "endpoint.request", peer=peer, method=method, path=target[:100], status=reply.status
            )
        elif self.debug:  # (the fields are not even gathered otherwise: the hot path)
            log.debug(
                "endpoint.request", peer=peer, method=method, path=target[:100], status=reply.status
            )
        return reply

    async def _ecs(self, method: str, target: str, headers: dict[str, str]) -> Reply:
        given = headers.get("authorization")
        if given is None:
            return _error(401, "Unauthorized", "missing Authorization header")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return _error(403, "Forbidden", "wrong authorization token")
        if method != "GET" or target.split("?", 1)[0] != self.path:
            return _error(404, "NotFound", f"credentials are served at GET {self.path}")
        creds, problem = await self._credentials()
        if problem is not None:
            return problem
        encoded = self._ecs_body
        if encoded is None or encoded[0] is not creds:
            body = {
                "AccessKeyId": creds["AccessKeyId"],
                "SecretAccessKey": creds["SecretAccessKey"],
                # Always present, "" for an IAM user's key: botocore (KeyError) and the
                # JavaScript SDK (a type check) refuse an answer without it.
                "Token": creds.get("SessionToken", ""),
                "Expiration": creds["Expiration"],
            }
            encoded = self._ecs_body = (creds, json.dumps(body).encode())
        return Reply(200, encoded[1])

    async def _imds(self, method: str, target: str, headers: dict[str, str]) -> Reply:
        if "x-forwarded-for" in headers:
            return _error(403, "Forbidden", "forwarded requests are refused (IMDSv2)")
        path = target.split("?", 1)[0]
        if method == "PUT" and path == "/latest/api/token":
            return self._imds_token(headers.get("x-aws-ec2-metadata-token-ttl-seconds", ""))
        if not self._imds_session_ok(headers.get("x-aws-ec2-metadata-token", "")):
            return Reply(401, b"", "text/plain")
        if method != "GET":
            return Reply(405, b"", "text/plain")
        if path == IMDS_CREDS:
            return Reply(200, self.role.encode(), "text/plain")
        if path in (IMDS_REGION, IMDS_ZONE) and self.region:
            # botocore asks for the region here when nothing else names one.
            answer = self.region if path == IMDS_REGION else f"{self.region}a"
            return Reply(200, answer.encode(), "text/plain")
        if path != IMDS_CREDS + self.role:
            return Reply(404, b"", "text/plain")
        creds, problem = await self._credentials()
        if problem is not None:
            return problem
        body = {
            "Code": "Success",
            "LastUpdated": rfc3339(time.time()),
            "Type": "AWS-HMAC",
            "AccessKeyId": creds["AccessKeyId"],
            "SecretAccessKey": creds["SecretAccessKey"],
            "Token": creds.get("SessionToken", ""),
            "Expiration": creds["Expiration"],
        }
        return Reply(200, json.dumps(body).encode())

    def _imds_token(self, ttl_text: str) -> Reply:
        try:
            ttl = int(ttl_text)
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= IMDS_TOKEN_TTL_MAX:
            return Reply(400, b"", "text/plain")
        now = time.monotonic()
        if len(self._imds_tokens) >= IMDS_TOKENS_MAX:  # forget the expired, then the oldest
            self._imds_tokens = {t: e for t, e in self._imds_tokens.items() if e > now}
            while len(self._imds_tokens) >= IMDS_TOKENS_MAX:
                self._imds_tokens.pop(next(iter(self._imds_tokens)))
        token = secrets.token_urlsafe(32)
        self._imds_tokens[token] = now + ttl
        return Reply(200, token.encode(), "text/plain")

    def _imds_session_ok(self, token: str) -> bool:
        now = time.monotonic()
        for known, expires in self._imds_tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()) and expires > now:
                return True
        return False

    async def _from_agent(self) -> dict[str, Any]:
        """The agent's answer, at most ANSWER_CACHE old: a burst of SDK requests
        costs one round trip, and the answer is never staler than a second (the
        agent replaces leases long before they run out)."""
        cached = self._cached
        if cached is not None:
            age = trio.current_time() - cached[0]
            # Fresh; or a refresh is already on its way: only the one request that
            # refreshes waits for the agent, not every request in that moment.
            if age < ANSWER_CACHE or (age < ANSWER_STALE and self._fetching.locked()):
                return cached[1]
        async with self._fetching:
            cached = self._cached
            if cached is not None and trio.current_time() - cached[0] < ANSWER_CACHE:
                return cached[1]
            answer = await self.link.credentials(self.role)
            if answer.get("ok"):
                self._cached = (trio.current_time(), answer)
            return answer

    async def _credentials(self) -> tuple[dict[str, Any], Reply | None]:
        try:
            answer = await self._from_agent()
        except AgentDown as exc:
            return {}, _error(503, "AgentNotRunning", f"{exc}; start it with `dyncreds agent`")
        if not answer.get("ok"):
            error = answer.get("error") or {}
            code = str(error.get("code", "internal"))
            message = str(error.get("message", "the agent reported an error"))
            return {}, _error(STATUS_OF.get(code, 500), code, message)
        creds: dict[str, Any] = answer["credentials"]
        return creds, None


# --------------------------------------------------------------------------- serving


async def serve_connection(
    endpoint: Endpoint, stream: trio.SocketStream, hop_limit: bool = False
) -> None:
    """One HTTP/1.1 connection, keep-alive, bounded in size and time.

    h11 parses every request (a fresh ``h11.Connection`` per request, handed the
    bytes already read past the previous one). Answers are written here: three
    fixed headers and a body with its length, whose heads are built once - h11's
    ``send`` state machine cost more than everything else a cached answer does."""
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
    size = 0
    scope, end = timer
    scope.deadline = min(end, trio.current_time() + IDLE_TIMEOUT)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                # h11 bounds a request still arriving; one that came in one
                # piece is measured here.
                size = len(event.target) + sum(len(k) + len(v) for k, v in event.headers)
                if size > MAX_HEADERS:
                    await _send(stream, _error(431, "TooLarge", "headers too large"), False)
                    return False
                request = event
                size = 0
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    await _send(stream, _error(413, "TooLarge", "request body too large"), False)
                    return False
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return False
    except h11.RemoteProtocolError as exc:
        error = _error(exc.error_status_hint, "BadRequest", "malformed or oversized request")
        await _send(stream, error, False)
        return False
    if request is None:
        return False
    keep_alive = _keep_alive(request)
    scope.deadline = min(end, trio.current_time() + REQUEST_TIMEOUT)
    reply = await endpoint.answer(request, peer)
    await _send(stream, reply, keep_alive)
    return keep_alive


def _keep_alive(request: h11.Request) -> bool:
    """HTTP/1.1 keeps the connection unless the client says ``close``; 1.0 closes."""
    if request.http_version != b"1.1":
        return False
    for name, value in request.headers:
        if name == b"connection" and b"close" in value.lower():
            return False
    return True


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
