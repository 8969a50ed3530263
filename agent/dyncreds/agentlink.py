"""An endpoint's links to the agent socket (``exec`` and ``serve``; never the agent).

- ``AgentLink``: one persistent connection, one request at a time: credentials,
  renew, and the audit reports.
- ``Watch``: a second connection held in the agent's ``watch`` op (a long poll),
  answered at every lock, unlock, revoke or renewal. The endpoint may answer from
  its one-second cache only while this link is up, and drops the cache *before* it
  acknowledges a change (its next ``watch``): the agent's ``lock`` waits for that
  acknowledgement, so once ``lock`` returns no endpoint serves what it had cached.
- ``Reports``: hand-outs and refusals, counted per (client connection, outcome,
  key), sent to the agent's audit log (the ``report`` op) every second and at exit.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import trio

from dyncreds import logs
from dyncreds.protocol import rfc3339

log = logs.get("endpoint")

WATCH_RETRY = 1.0
# The agent answers a watch at least every 20 s (protocol.WATCH_HOLD); silence for
# longer means the link is gone.
WATCH_SILENCE = 45.0
REPORT_EVERY = 1.0
REPORT_CHUNK = 100  # events per report line (the agent's lines are capped at 64 KiB)
REPORT_PENDING_MAX = 10_000


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
        return await self.call({"op": "credentials", "role": role})

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        line = json.dumps(request).encode() + b"\n"
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


class Watch:
    """The agent's changes, as they happen. ``epoch`` moves at every change and
    whenever the link goes down; ``live`` says whether the cache may be used."""

    def __init__(self, path: str):
        self.path = path
        self.ident = secrets.token_hex(8)
        self.epoch = 0
        self.live = False
        self.generation = -1

    def _changed(self) -> None:
        self.epoch += 1

    async def run(self) -> None:
        """Hold the watch until cancelled; reconnect when the agent goes away."""
        while True:
            try:
                await self._hold()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except (ValueError, KeyError, TypeError) as exc:  # not the agent's answer
                log.warning("endpoint.watch_failed", error=type(exc).__name__)
            except trio.TooSlowError:
                log.warning("endpoint.watch_silent", seconds=WATCH_SILENCE)
            if self.live:
                self.live = False
                self._changed()
            await trio.sleep(WATCH_RETRY)

    async def _hold(self) -> None:
        stream = await trio.open_unix_socket(self.path)
        async with stream:
            buffer = b""
            while True:
                # Sent after the change was applied: this is the acknowledgement.
                request = {"op": "watch", "id": self.ident, "seen": self.generation}
                await stream.send_all(json.dumps(request).encode() + b"\n")
                with trio.fail_after(WATCH_SILENCE):
                    while b"\n" not in buffer:
                        chunk = await stream.receive_some(4096)
                        if not chunk:
                            raise trio.BrokenResourceError("the agent closed the watch")
                        buffer += chunk
                line, _, buffer = buffer.partition(b"\n")
                answer = json.loads(line)
                if not answer.get("ok"):
                    # An agent without the op: no cache, every request asks it.
                    log.warning("endpoint.watch_refused", error=str(answer.get("error"))[:200])
                    await trio.sleep_forever()
                generation = int(answer["generation"])
                if generation != self.generation:
                    self.generation = generation
                    self._changed()  # the cache is dropped before the next watch acks
                self.live = True


class Reports:
    """The endpoint's audit lines, counted per (client, outcome, key) and flushed
    to the agent: nothing handed out from the cache goes unrecorded."""

    def __init__(self, link: AgentLink, role: str, mode: str):
        self.link = link
        self.role = role
        self.mode = mode
        self.dropped = 0
        # key -> [count, first, last]
        self._pending: dict[tuple[Any, ...], list[float]] = {}

    def add(
        self,
        outcome: str,
        client: str,
        uid: int | None,
        access_key_id: str | None = None,
        lease_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        key = (outcome, client, uid, access_key_id, lease_id, reason)
        entry = self._pending.get(key)
        now = time.time()
        if entry is not None:
            entry[0] += 1
            entry[2] = now
        elif len(self._pending) < REPORT_PENDING_MAX:
            self._pending[key] = [1, now, now]
        else:
            self.dropped += 1
            log.error("endpoint.audit_dropped", dropped=self.dropped)

    async def run(self) -> None:
        while True:
            await trio.sleep(REPORT_EVERY)
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        events = [self._event(key, entry) for key, entry in pending.items()]
        for start in range(0, len(events), REPORT_CHUNK):
            chunk = events[start : start + REPORT_CHUNK]
            try:
                answer = await self.link.call({"op": "report", "events": chunk})
            except (AgentDown, ValueError):
                answer = {"ok": False}
            if not answer.get("ok"):
                self.dropped += sum(e["count"] for e in chunk)
                log.error("endpoint.audit_unreported", events=len(chunk), dropped=self.dropped)

    def _event(self, key: tuple[Any, ...], entry: list[float]) -> dict[str, Any]:
        outcome, client, uid, access_key_id, lease_id, reason = key
        event: dict[str, Any] = {
            "outcome": outcome,
            "role": self.role,
            "mode": self.mode,
            "count": int(entry[0]),
            "first": rfc3339(entry[1]),
            "last": rfc3339(entry[2]),
            "client": client,
            "client_uid": uid,
        }
        optional = {"access_key_id": access_key_id, "lease_id": lease_id, "reason": reason}
        event.update({k: v for k, v in optional.items() if v is not None})
        return event
