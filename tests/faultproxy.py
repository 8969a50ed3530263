"""A small HTTP proxy between the agent and moto's server that injects faults at
the edge: AWS errors (throttling, 5xx), keys that do not work yet (IAM
propagation), and SIGKILL of the agent just before or just after a chosen AWS
operation. dyncreds' own code runs unchanged.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY_RE = re.compile(r"Credential=([A-Z0-9]+)/")


@dataclass
class Call:
    action: str
    key_id: str | None
    status: int = 0
    received: float = 0.0  # time.time() the proxy got it
    params: dict[str, str] = field(default_factory=dict)  # the request's form fields
    forwarded: float | None = None  # time.time() it was sent on to AWS


@dataclass
class Fault:
    """What to do with a matching request.

    ``error``: answer with this AWS error code (and ``status``) instead of forwarding.
    ``kill``: "before" (the request never reaches AWS) or "after" (AWS did it, the
    agent never hears back); the callback kills the agent.
    ``hold``: keep the request this long, then forward it even if the client has
    given up on it (a slow network path, a hung AWS endpoint).
    ``lose_reply``: forward it (AWS does it) and close the connection without an
    answer: the client's SDK retries a request that already took effect.
    ``then``: called once AWS answered, before the answer goes back (e.g. SIGSTOP
    the agent right after a write landed).
    ``contains``: match only requests whose body holds this text (DynamoDB's
    operations are JSON: an expression, a value).
    """

    actions: frozenset[str] | None = None  # None: every action
    error: str | None = None
    status: int = 400
    kill: str | None = None
    times: int | None = None  # apply this many times, then stop
    only_key: Callable[[str | None], bool] | None = None
    hold: float = 0.0  # seconds to hold the request before forwarding it anyway
    drop: bool = False  # close the connection without an answer (a network cut)
    lose_reply: bool = False
    then: Callable[[], None] | None = None
    contains: str | None = None
    hits: int = 0

    def matches(self, call: Call, body: bytes = b"") -> bool:
        if self.actions is not None and call.action not in self.actions:
            return False
        if self.contains is not None and self.contains.encode() not in body:
            return False
        if self.only_key is not None and not self.only_key(call.key_id):
            return False
        return self.times is None or self.hits < self.times


@dataclass
class FaultProxy:
    upstream: str  # http://host:port of moto
    on_kill: Callable[[], None] = lambda: None
    faults: list[Fault] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    rejected_per_key: Counter[str] = field(default_factory=Counter)

    def start(self) -> FaultProxy:
        proxy = self
        self._target = urllib.parse.urlparse(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self._handle()

            def do_GET(self) -> None:
                self._handle()

            def _handle(self) -> None:
                proxy.handle(self)

            def _reply(self, status: int, data: bytes, content_type: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type or "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (the tests kill agents): not news

        self._lock = threading.Lock()
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def handle(self, h: Any) -> None:
        """One request: record it, apply the first matching fault, forward it."""
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        action, params = _action(body, h.headers.get("X-Amz-Target"))
        match = KEY_RE.search(h.headers.get("Authorization", ""))
        call = Call(
            action,
            match.group(1) if match else None,
            received=time.time(),
            params=params,
        )
        with self._lock:
            self.calls.append(call)
            fault = next((f for f in self.faults if f.matches(call, body)), None)
            if fault is not None:
                fault.hits += 1
        if fault is not None and (fault.drop or fault.kill == "before"):
            if fault.kill == "before":
                self.on_kill()
            h.close_connection = True  # no answer at all
            return
        if fault is not None and fault.error:
            if call.key_id:
                self.rejected_per_key[call.key_id] += 1
            call.status = fault.status
            h._reply(fault.status, error_xml(fault.error))
            return
        if fault is not None and fault.hold:
            time.sleep(fault.hold)
        call.forwarded = time.time()
        call.status, data, content_type = self._forward(h, body)
        if fault is not None and fault.then is not None:
            fault.then()
        if fault is not None and (fault.kill == "after" or fault.lose_reply):
            if fault.kill == "after":
                self.on_kill()
            h.close_connection = True
            return
        h._reply(call.status, data, content_type)

    def _forward(self, h: Any, body: bytes) -> tuple[int, bytes, str | None]:
        conn = http.client.HTTPConnection(str(self._target.hostname), self._target.port, timeout=30)
        headers = {
            k: v for k, v in h.headers.items() if k.lower() != "connection"
        }  # Host is signed: keep it
        conn.request(h.command, h.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, data, response.getheader("Content-Type")

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def calls_of(self, action: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.action == action]

    def actions(self) -> list[str]:
        with self._lock:
            return [c.action for c in self.calls]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _action(body: bytes, amz_target: str | None) -> tuple[str, dict[str, str]]:
    """The operation and its form fields: IAM/STS post a form with ``Action``;
    DynamoDB posts JSON and names the operation in ``X-Amz-Target``."""
    if amz_target:
        return amz_target.rsplit(".", 1)[-1], {}
    params = urllib.parse.parse_qs(body.decode(errors="replace"))
    return (params.get("Action") or ["?"])[0], {k: v[0] for k, v in params.items()}


def error_xml(code: str) -> bytes:
    return (
        '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error>'
        f"<Type>Sender</Type><Code>{code}</Code><Message>injected {code}</Message>"
        "</Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    ).encode()
