"""Credential endpoints on loopback HTTP, for what cannot run the shim: the ECS
container-credentials protocol (``exec``, ``serve``) and IMDSv2 (``serve --imds``).

Never part of the agent, which listens only on its Unix socket: a process of the
user's (``dyncreds exec`` or ``serve``) runs this, and answers every request from
the agent's current lease over one persistent connection to the agent socket, so
a program that runs for a day refreshes by itself across lease replacements and
never holds a static key.

This module answers requests; ``httpserve.py`` carries them (h11 on trio sockets,
bounded like the Unix socket's connections). Every request must name a loopback
``Host`` (DNS rebinding) and carry the token: ECS's ``Authorization`` header, compared in
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
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from dyncreds import logs
from dyncreds.protocol import rfc3339

log = logs.get("endpoint")

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


def error_reply(status: int, code: str, message: str) -> Reply:
    """The JSON ``{code, message}`` every SDK shows."""
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

    async def answer(
        self, method_raw: bytes, target_raw: bytes, raw: list[tuple[bytes, bytes]], peer: str
    ) -> Reply:
        """One parsed request (h11 gives header names lower-cased) -> its answer."""
        headers = {k.decode(): v.decode(errors="replace") for k, v in raw}
        method, target = method_raw.decode(), target_raw.decode(errors="replace")
        if not loopback_host(headers.get("host", ""), self.extra_hosts):
            reply = error_reply(403, "HostNotAllowed", "the Host header must be a loopback address")
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
            return error_reply(401, "Unauthorized", "missing Authorization header")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return error_reply(403, "Forbidden", "wrong authorization token")
        if method != "GET" or target.split("?", 1)[0] != self.path:
            return error_reply(404, "NotFound", f"credentials are served at GET {self.path}")
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
            return error_reply(403, "Forbidden", "forwarded requests are refused (IMDSv2)")
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
            return {}, error_reply(503, "AgentNotRunning", f"{exc}; start it with `dyncreds agent`")
        if not answer.get("ok"):
            error = answer.get("error") or {}
            code = str(error.get("code", "internal"))
            message = str(error.get("message", "the agent reported an error"))
            return {}, error_reply(STATUS_OF.get(code, 500), code, message)
        creds: dict[str, Any] = answer["credentials"]
        return creds, None
