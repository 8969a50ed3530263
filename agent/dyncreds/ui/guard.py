"""The console's door: every request passes here before any page sees it.

In order: the peer must be this user (the kernel's owner of the connecting
socket), the ``Host`` must be exactly the address and port we listen on (DNS
rebinding), and the browser must hold a live session - got by presenting the
launch token once, which is swapped for an HttpOnly, SameSite=Strict cookie and
dropped from the address bar by a redirect. Every answer carries a strict
Content-Security-Policy and ``Cache-Control: no-store``. CSRF tokens are checked
by the pages' form reader (``app.form``), one per session.

Hypercorn does not hand the accepted socket to the app, but its scope carries the
connection's two addresses, read from that socket; on loopback they name exactly one
open connection, and ``peer.tcp_connection_uid`` asks the kernel who owns its other end
(checked on every request, tens of microseconds).

Nothing secret is logged: the log line is method, path (never the query) and status.
"""

from __future__ import annotations

import hmac
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from dyncreds.peer import tcp_connection_uid

COOKIE = "dyncreds_ui"  # + "_PORT": browsers share cookies across a host's ports
IDLE_AFTER = 15 * 60.0
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Any]


@dataclass
class Session:
    csrf: str
    last_seen: float


@dataclass
class Sessions:
    """The launch token and the browser sessions it was exchanged for. Sessions
    expire after ``idle_after`` seconds without a request."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    idle_after: float = IDLE_AFTER
    clock: Callable[[], float] = time.monotonic
    live: dict[str, Session] = field(default_factory=dict)

    def token_ok(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def open(self) -> str:
        sid = secrets.token_urlsafe(32)
        self.live[sid] = Session(secrets.token_urlsafe(32), self.clock())
        return sid

    def get(self, sid: str | None) -> Session | None:
        """The live session of this cookie (touched), or None; expired ones go."""
        now = self.clock()
        for key in [k for k, s in self.live.items() if now - s.last_seen > self.idle_after]:
            del self.live[key]
        if not sid:
            return None
        # Constant time against every live id: the cookie is a bearer secret.
        found = next((s for k, s in self.live.items() if hmac.compare_digest(k, sid)), None)
        if found is not None:
            found.last_seen = now
        return found


def csrf_ok(session: Session, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(str(offered).encode(), session.csrf.encode())


class Guard:
    """ASGI middleware in front of the Starlette app (see the module docstring)."""

    def __init__(self, app: ASGIApp, sessions: Sessions, uid: int | None = None) -> None:
        self.app = app
        self.sessions = sessions
        self.uid = os.getuid() if uid is None else uid
        self.host: str | None = None  # "127.0.0.1:PORT", set once the port is bound
        self.log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets
        status = await self._answer(scope, receive, send)
        self.log(f"{scope['method']} {scope['path']} {status}")

    async def _answer(self, scope: Scope, receive: Any, send: Any) -> int:
        refusal = self.refusal(scope)
        if refusal is not None:
            await _plain(send, *refusal)
            return refusal[0]
        headers = _headers(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        if token:
            if not self.sessions.token_ok(token):
                await _plain(send, 401, "wrong token: open the address `dyncreds ui` printed")
                return 401
            # The token leaves the address bar (and the history's next entry) at once.
            sid = self.sessions.open()
            cookie = f"{self.cookie}={sid}; HttpOnly; SameSite=Strict; Path=/".encode()
            await _plain(send, 303, "signed in", [(b"location", b"/"), (b"set-cookie", cookie)])
            return 303
        session = self.sessions.get(_cookie(headers, self.cookie))
        if session is None:
            await _plain(
                send, 401, "no session (or it expired): open the address `dyncreds ui` printed"
            )
            return 401
        if scope["method"] not in ("GET", "HEAD", "POST"):
            await _plain(send, 405, "method not allowed")
            return 405
        origin = headers.get("origin")
        if scope["method"] == "POST" and origin not in (None, f"http://{self.host}"):
            await _plain(send, 403, "cross-origin request refused")
            return 403
        scope.setdefault("state", {})["session"] = session
        return await self._forward(scope, receive, send)

    @property
    def cookie(self) -> str:
        return f"{COOKIE}_{(self.host or '').rpartition(':')[2]}"

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """Who and where, before anything else: this user, our exact Host."""
        client, server = scope.get("client"), scope.get("server")
        if not client or not server:
            return 403, "unknown peer"
        family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
        uid = tcp_connection_uid(family, tuple(server), tuple(client))
        if uid is None or uid != self.uid:
            return 403, "this console serves only the user who started it"
        if self.host is None or _headers(scope).get("host") != self.host:
            return 400, "wrong Host: use the address `dyncreds ui` printed"
        return None

    async def _forward(self, scope: Scope, receive: Any, send: Any) -> int:
        status = 500

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {h for h, _ in HEADERS}
                ]
                message = {**message, "headers": kept + HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)
        return status


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _cookie(headers: dict[str, str], name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is no session
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


async def _plain(
    send: Any, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = (text + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS, *(extra or [])]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
