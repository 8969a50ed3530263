"""Credential endpoints on loopback HTTP, for what cannot run the shim: the ECS
container-credentials protocol (``exec``, ``serve``) and IMDSv2 (``serve --imds``).

Never part of the agent, which listens only on its Unix socket: a process of the
user's (``dyncreds exec`` or ``serve``) runs this, and answers every request from
the agent's current lease over one persistent connection to the agent socket, so
a program that runs for a day refreshes by itself across lease replacements and
never holds a static key.

This module answers requests; ``httpserve.py`` carries them (h11 on trio sockets,
bounded like the Unix socket's connections) and refuses, before any of this runs, a
loopback connection whose owner is not our uid. Every request must name a loopback
``Host`` (DNS rebinding) and carry the token: ECS's ``Authorization`` header, compared in
constant time, or an IMDSv2 session token obtained with PUT (no secret: IMDS is
loopback-only, see commands/endpoint.py). IMDS answers keep more than 21 minutes, for
botocore. Answers come from a one-second cache only while the agent watch is up and
unchanged (agentlink.py: the lock fence); every hand-out and refusal is counted for
the audit log. Tokens and credentials are never logged.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from dyncreds import logs
from dyncreds.agentlink import AgentDown, AgentLink, Reports, Watch
from dyncreds.protocol import parse_rfc3339, rfc3339

log = logs.get("endpoint")

IMDS_TOKEN_TTL_MAX = 21600
ANSWER_CACHE = 1.0  # seconds an agent answer is reused for
# ...and at most this old while a refresh is in flight (the agent's answers keep
# min_remaining, a minute or more, so a few seconds' staleness is harmless).
ANSWER_STALE = 5.0
IMDS_TOKENS_MAX = 1024
# botocore rewrites an IMDS credential's expiry when it is within 10 min + up to
# 10 min of jitter (utils._evaluate_expiration) and then signs past it: IMDS
# answers always have more than this left.
IMDS_MIN_REMAINING = 21 * 60
# IMDSv2 refuses requests that went through a proxy.
FORWARDED_HEADERS = frozenset({"x-forwarded-for", "forwarded", "x-real-ip"})
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


class ImdsSessions:
    """IMDSv2 session tokens: a bounded table that a flood of PUTs cannot empty of
    the tokens in use. Full, it forgets the expired, then the oldest never
    presented; when every token is in use, a new PUT is refused (503), never one
    of theirs forgotten. Looked up by the token's SHA-256 (a dict, not a scan)."""

    def __init__(self, limit: int = IMDS_TOKENS_MAX):
        self.limit = limit
        self._tokens: dict[bytes, list[float | bool]] = {}  # digest -> [expires, used]

    def issue(self, ttl: int) -> str | None:
        now = time.monotonic()
        if len(self._tokens) >= self.limit:
            self._tokens = {d: e for d, e in self._tokens.items() if float(e[0]) > now}
        if len(self._tokens) >= self.limit:
            unused = next((d for d, e in self._tokens.items() if not e[1]), None)
            if unused is None:
                return None
            del self._tokens[unused]
        token = secrets.token_urlsafe(32)
        self._tokens[hashlib.sha256(token.encode()).digest()] = [now + ttl, False]
        return token

    def valid(self, token: str) -> bool:
        entry = self._tokens.get(hashlib.sha256(token.encode(errors="replace")).digest())
        if entry is None or float(entry[0]) <= time.monotonic():
            return False
        entry[1] = True
        return True


def imds_ttl(text: str) -> int | None:
    """The TTL header: ASCII digits only (int() would take "+60", "1_0" and other
    scripts' digits), 1 to 21600."""
    if not (0 < len(text) <= 5 and text.isascii() and text.isdigit()):
        return None
    ttl = int(text)
    return ttl if 1 <= ttl <= IMDS_TOKEN_TTL_MAX else None


@dataclass
class Answer:
    """An agent answer as the endpoint serves it: the credentials, their key and
    lease ids (for the audit), their expiry, and the ECS body encoded once."""

    creds: dict[str, Any]
    access_key_id: str
    lease_id: str | None
    expires_at: float
    ecs_body: bytes


def _answer(response: dict[str, Any]) -> Answer:
    creds: dict[str, Any] = response["credentials"]
    body = {
        "AccessKeyId": creds["AccessKeyId"],
        "SecretAccessKey": creds["SecretAccessKey"],
        # Always present, "" for an IAM user's key: botocore (KeyError) and the
        # JavaScript SDK (a type check) refuse an answer without it.
        "Token": creds.get("SessionToken", ""),
        "Expiration": creds["Expiration"],
    }
    return Answer(
        creds,
        creds["AccessKeyId"],
        (response.get("lease") or {}).get("id"),
        parse_rfc3339(creds["Expiration"]),
        json.dumps(body).encode(),
    )


@dataclass
class Endpoint:
    """The HTTP side: one role, one token (ECS) or IMDSv2 session tokens."""

    link: AgentLink
    role: str
    mode: Literal["ecs", "imds"] = "ecs"
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    extra_hosts: frozenset[str] = frozenset()
    region: str | None = None  # IMDS answers placement/region with it
    # Loopback listeners accept only this uid's connections, as the kernel says.
    peer_check: bool = True
    uid: int = field(default_factory=os.geteuid)
    watch: Watch | None = None  # without one (or while it is down), no cache
    counters: dict[str, int] = field(default_factory=dict)
    # Is the debug log on? Asked once: every request would otherwise ask.
    debug: bool = field(default_factory=lambda: log.logger.isEnabledFor(logging.DEBUG))
    reports: Reports = field(init=False)
    _sessions: ImdsSessions = field(default_factory=ImdsSessions)
    _cached: tuple[float, int, Answer] | None = None  # (when, watch epoch, answer)
    _fetching: trio.Lock = field(default_factory=trio.Lock)
    _throttle: logs.Throttle = field(default_factory=lambda: logs.Throttle(log))

    def __post_init__(self) -> None:
        self.reports = Reports(self.link, self.role, self.mode)

    @property
    def path(self) -> str:
        return f"{ECS_PATH}{self.role}"

    def count(self, status: int) -> None:
        name = _COUNTER_NAMES.get(status) or f"http_{status}"
        self.counters[name] = self.counters.get(name, 0) + 1

    def refuse_peer(self, uid: int | None, client: str) -> Reply:
        """A loopback connection from another uid (or one the kernel cannot name)."""
        self.count(403)
        who = "unknown" if uid is None else str(uid)
        self._throttle.warning("endpoint.peer_refused", kind=who, peer=client, uid=who)
        self.reports.add("forbidden", client, uid, reason=f"peer uid {who} is not {self.uid}")
        return error_reply(403, "Forbidden", f"this endpoint serves uid {self.uid} only")

    # ---------------------------------------------------------------- routing

    async def answer(
        self,
        method_raw: bytes,
        target_raw: bytes,
        raw: list[tuple[bytes, bytes]],
        peer: str,
        uid: int | None = None,
    ) -> Reply:
        """One parsed request (h11 gives header names lower-cased) -> its answer."""
        headers = {k.decode(): v.decode(errors="replace") for k, v in raw}
        method, target = method_raw.decode(), target_raw.decode(errors="replace")
        if not loopback_host(headers.get("host", ""), self.extra_hosts):
            reply = error_reply(403, "HostNotAllowed", "the Host header must be a loopback address")
        elif self.mode == "imds":
            reply = await self._imds(method, target, headers, peer, uid)
        else:
            reply = await self._ecs(method, target, headers, peer, uid)
        self.count(reply.status)
        if reply.status >= 400:
            if reply.status in (401, 403):
                code = "unauthorized" if reply.status == 401 else "forbidden"
                self.reports.add(code, peer, uid, reason=_reason(reply))
            self._throttle.warning(
                "endpoint.request", kind=str(reply.status), peer=peer, method=method,
                path=target[:100], status=reply.status,
            )  # fmt: skip
        elif self.debug:  # (the fields are not even gathered otherwise: the hot path)
            log.debug(
                "endpoint.request", peer=peer, method=method, path=target[:100], status=reply.status
            )
        return reply

    async def _ecs(
        self, method: str, target: str, headers: dict[str, str], peer: str, uid: int | None
    ) -> Reply:
        given = headers.get("authorization")
        if given is None:
            return error_reply(401, "Unauthorized", "missing Authorization header")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return error_reply(403, "Forbidden", "wrong authorization token")
        if method != "GET" or target.split("?", 1)[0] != self.path:
            return error_reply(404, "NotFound", f"credentials are served at GET {self.path}")
        answer, problem = await self._credentials()
        if answer is None:
            return problem
        self.reports.add("ok", peer, uid, answer.access_key_id, answer.lease_id)
        return Reply(200, answer.ecs_body)

    async def _imds(
        self, method: str, target: str, headers: dict[str, str], peer: str, uid: int | None
    ) -> Reply:
        if FORWARDED_HEADERS.intersection(headers):
            return error_reply(403, "Forbidden", "forwarded requests are refused (IMDSv2)")
        path = target.split("?", 1)[0]
        if method == "PUT" and path == "/latest/api/token":
            return self._imds_token(headers.get("x-aws-ec2-metadata-token-ttl-seconds", ""))
        if not self._sessions.valid(headers.get("x-aws-ec2-metadata-token", "")):
            return Reply(401, b"", "text/plain")
        if method != "GET":
            return Reply(405, b"", "text/plain")
        if path == IMDS_CREDS:
            return Reply(200, self.role.encode(), "text/plain")
        if path in (IMDS_REGION, IMDS_ZONE) and self.region:
            # botocore asks for the region here when nothing else names one.
            text = self.region if path == IMDS_REGION else f"{self.region}a"
            return Reply(200, text.encode(), "text/plain")
        if path != IMDS_CREDS + self.role:
            return Reply(404, b"", "text/plain")
        answer, problem = await self._credentials(IMDS_MIN_REMAINING)
        if answer is None:
            return problem
        creds = answer.creds
        body = {
            "Code": "Success",
            "LastUpdated": rfc3339(time.time()),
            "Type": "AWS-HMAC",
            "AccessKeyId": creds["AccessKeyId"],
            "SecretAccessKey": creds["SecretAccessKey"],
            "Token": creds.get("SessionToken", ""),
            "Expiration": creds["Expiration"],
        }
        self.reports.add("ok", peer, uid, answer.access_key_id, answer.lease_id)
        return Reply(200, json.dumps(body).encode())

    def _imds_token(self, ttl_text: str) -> Reply:
        ttl = imds_ttl(ttl_text)
        if ttl is None:
            return Reply(400, b"", "text/plain")
        token = self._sessions.issue(ttl)
        if token is None:
            return error_reply(503, "TooManySessions", "every IMDS session token is in use")
        return Reply(200, token.encode(), "text/plain")

    # ---------------------------------------------------------------- the agent

    def _cache_usable(self, age: float, epoch: int) -> bool:
        watch = self.watch
        return watch is not None and watch.live and watch.epoch == epoch and age < ANSWER_STALE

    async def _from_agent(self) -> dict[str, Any] | Answer:
        """The agent's answer, at most ANSWER_CACHE old - or ANSWER_STALE while
        another request is refreshing it: a burst of SDK requests costs one round
        trip (the agent replaces leases long before they run out). Only while the
        watch link is up and nothing changed since (the lock fence, see agentlink.py)."""
        cached = self._cached
        if cached is not None and self._cache_usable(trio.current_time() - cached[0], cached[1]):
            age = trio.current_time() - cached[0]
            # Fresh; or a refresh is already on its way: only the one request that
            # refreshes waits for the agent, not every request in that moment.
            if age < ANSWER_CACHE or self._fetching.locked():
                return cached[2]
        async with self._fetching:
            cached = self._cached
            if (
                cached is not None
                and self._cache_usable(trio.current_time() - cached[0], cached[1])
                and trio.current_time() - cached[0] < ANSWER_CACHE
            ):
                return cached[2]
            for _ in range(3):
                epoch = self.watch.epoch if self.watch is not None else 0
                response = await self.link.credentials(self.role)
                if not response.get("ok"):
                    return response
                if self.watch is None or self.watch.epoch == epoch:
                    answer = _answer(response)
                    self._cached = (trio.current_time(), epoch, answer)
                    return answer
                # The agent changed (a lock?) while we asked: this answer may
                # predate it; ask again.
            return _CHANGING

    async def _credentials(self, need: float = 0.0) -> tuple[Answer | None, Reply]:
        try:
            got = await self._from_agent()
            if isinstance(got, Answer) and got.expires_at - time.time() < need:
                got = await self._renewed(need)
        except AgentDown as exc:
            return None, error_reply(
                503, "AgentNotRunning", f"{exc}; start it with `dyncreds agent`"
            )
        if isinstance(got, Answer):
            return got, _NO_REPLY
        error = got.get("error") or {}
        code = str(error.get("code", "internal"))
        message = str(error.get("message", "the agent reported an error"))
        return None, error_reply(STATUS_OF.get(code, 500), code, message)

    async def _renewed(self, need: float) -> dict[str, Any] | Answer:
        """IMDS: botocore stretches credentials that expire within 20 minutes (and
        signs with them past their expiry), so fewer than ``need`` seconds left
        asks the agent for a new lease: once, however many requests saw it."""
        async with self._fetching:
            cached = self._cached
            now = trio.current_time()
            if (
                cached is not None
                and self._cache_usable(now - cached[0], cached[1])
                and cached[2].expires_at - time.time() >= need
            ):
                return cached[2]  # another request renewed meanwhile
            self._cached = None
            response = await self.link.call({"op": "renew", "role": self.role})
            if not response.get("ok"):
                return response
            epoch = self.watch.epoch if self.watch is not None else 0
            response = await self.link.credentials(self.role)
            if not response.get("ok"):
                return response
            answer = _answer(response)
            if answer.expires_at - time.time() < need:
                message = (
                    f"role {self.role}: its credentials have under {int(need // 60)} minutes "
                    "left, too little for IMDS clients; raise the role's ttl"
                )
                return {"ok": False, "error": {"code": "unavailable", "message": message}}
            if self.watch is not None and self.watch.epoch != epoch:
                return _CHANGING  # (a lock may have come after this answer)
            self._cached = (trio.current_time(), epoch, answer)
            return answer


_NO_REPLY = Reply(500, b"")
_CHANGING = {
    "ok": False,
    "error": {
        "code": "unavailable",
        "message": "the agent's state changed while it was asked (a lock?); try again",
    },
}


def _reason(reply: Reply) -> str | None:
    try:
        message = json.loads(reply.body).get("message")
    except ValueError:
        return None
    return str(message) if message else None
