"""The endpoints' parts, in process: IMDS parsing and its session table, the
config copy without credentials, throttled warnings, the connection held out of
descriptors, the agent's watchers (the lock fence), and the IMDS 21-minute rule
against a stand-in agent socket."""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from dyncreds import logs
from dyncreds.agentlink import AgentLink
from dyncreds.commands.sdkenv import without_credentials
from dyncreds.connections import Connections
from dyncreds.endpoint import IMDS_CREDS, Endpoint, ImdsSessions, imds_ttl
from dyncreds.httpserve import _hop_limit
from dyncreds.protocol import rfc3339
from dyncreds.watchers import ACK_WAIT, Watchers


def test_imds_ttl_takes_ascii_digits_only() -> None:
    assert imds_ttl("60") == 60 and imds_ttl("21600") == 21600 and imds_ttl("1") == 1
    for bad in (
        "+60",
        "1_0",
        "\u0666\u0660",
        "\uff16\uff10",
        " 60",
        "0",
        "21601",
        "",
        "-1",
        "1e3",
        "99999999",
    ):
        assert imds_ttl(bad) is None, bad


def test_a_put_flood_does_not_evict_a_session_in_use() -> None:
    sessions = ImdsSessions(limit=8)
    used = sessions.issue(60)
    assert used is not None and sessions.valid(used)
    for _ in range(100):
        sessions.issue(60)
    assert sessions.valid(used)
    assert not sessions.valid("made-up")
    # Every token in use: a new one is refused rather than one of theirs forgotten.
    full = ImdsSessions(limit=2)
    tokens = [full.issue(60), full.issue(60)]
    assert all(t is not None and full.valid(t) for t in tokens)
    assert full.issue(60) is None


def test_the_config_copy_keeps_settings_and_drops_every_credential() -> None:
    text = (
        "[default]\nregion = eu-west-3\nAWS_ACCESS_KEY_ID = AKIA1\naws_secret_access_key=x\n"
        "credential_process = /bin/x\n  nested = 1\ns3 =\n  addressing_style = path\n"
        "[profile p]\nrole_arn = arn\nsource_profile = default\noutput = json\n"
        "[profile s]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = r\n"
        "# aws_access_key_id = in a comment\n"
    )
    assert without_credentials(text) == (
        "[default]\nregion = eu-west-3\ns3 =\n  addressing_style = path\n"
        "[profile p]\noutput = json\n[profile s]\n# aws_access_key_id = in a comment\n"
    )


def test_repeated_warnings_are_counted_not_repeated(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = logs.Throttle(logs.get("test"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="dyncreds.test"):
        for _ in range(500):
            throttle.warning("endpoint.request", kind="403", status=403)
        throttle.warning("endpoint.request", kind="401", status=401)  # another kind
        now[0] = 11.0
        throttle.warning("endpoint.request", kind="403", status=403)
    records = [getattr(r, "dyncreds_fields", {}) for r in caplog.records]
    assert records == [{"status": 403}, {"status": 401}, {"status": 403, "repeated": 499}]


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
async def test_imds_answers_do_not_survive_a_hop(family: int) -> None:
    with trio.socket.socket(family, socket.SOCK_STREAM) as sock:
        _hop_limit(sock)
        if family == socket.AF_INET6:
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 1
        else:
            assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 1


# --------------------------------------------------------------------------- the held

HOLDER = """
import resource, socket, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
port = int(sys.argv[1])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(120)]
late = socket.create_connection(("127.0.0.1", port))
late.sendall(b"ping\\n")
late.settimeout(5)
print(late.recv(10).decode().strip(), flush=True)
"""


@pytest.mark.process  # a holder process opens the connections
async def test_out_of_descriptors_the_gate_closes_waiters_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    held = Connections(limit=10_000, wait_timeout=60, area="test")  # a cap the limit cannot hold

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            held.waiting(stream)
            try:
                data = await stream.receive_some(100)
            except trio.ClosedResourceError:
                return
            held.busy(stream)
            if data:
                await stream.send_all(b"pong\n")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    in_use = len(os.listdir("/proc/self/fd"))
    with caplog.at_level(logging.WARNING, logger="dyncreds.test"):
        async with trio.open_nursery() as nursery:
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 40, hard))
            try:
                await nursery.start(held.serve, listeners[0], handler, nursery)
                result = await trio.run_process(
                    [sys.executable, "-c", HOLDER, str(port)], capture_stdout=True
                )
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            nursery.cancel_scope.cancel()
    assert result.stdout.decode().strip() == "pong"
    assert held.counters["accept_failures"] > 0 and held.counters["closed_waiting"] > 0
    failures = [r for r in caplog.records if r.getMessage() == "connections.accept_failed"]
    assert len(failures) == 1  # once per interval, however many times accept failed


# --------------------------------------------------------------------------- watchers


async def test_lock_waits_for_every_watcher_to_drop_its_cache(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watchers = Watchers()
    seen: list[int] = []

    async def endpoint(ident: str, delay: float) -> None:
        generation = -1
        while True:
            generation = await watchers.watch(ident, generation)
            await trio.sleep(delay)  # dropping the cache, then acknowledging
            seen.append(generation)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(endpoint, "fast", 0.01)
        nursery.start_soon(endpoint, "slow", 0.5)
        await trio.sleep(1)
        start = trio.current_time()
        await watchers.bump()
        took = trio.current_time() - start
        assert 0.5 <= took < ACK_WAIT  # waited for the slow one, and only that long
        assert seen.count(watchers.generation) == 2
        nursery.cancel_scope.cancel()


async def test_a_watcher_that_never_comes_back_delays_lock_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watchers = Watchers()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchers.watch, "dead", 0)  # answered, never comes back
        await trio.sleep(1)
        start = trio.current_time()
        await watchers.bump()
        assert trio.current_time() - start == pytest.approx(ACK_WAIT)
        start = trio.current_time()
        await watchers.bump()  # forgotten: the next lock does not wait for it
        assert trio.current_time() - start < 0.01
        watchers.close()
        assert await watchers.watch("any", watchers.generation) == watchers.generation


# --------------------------------------------------------------------------- IMDS 21 min

Answer = Callable[[dict[str, Any]], dict[str, Any]]


async def _fake_agent(path: Path, answer: Answer, *, task_status: Any) -> None:
    """A stand-in for the agent's socket: one JSON line in, ``answer``'s line out."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen()

    async def handle(stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    reply = answer(json.loads(line))
                    await stream.send_all(json.dumps(reply).encode() + b"\n")

    await trio.serve_listeners(handle, [trio.SocketListener(sock)], task_status=task_status)


def _credentials(left: float) -> dict[str, Any]:
    return {
        "ok": True,
        "credentials": {
            "AccessKeyId": f"AKIA{int(left)}",
            "SecretAccessKey": "s",
            "Expiration": rfc3339(time.time() + left),
        },
        "lease": {"id": "r/1"},
    }


async def _imds_get(endpoint: Endpoint) -> tuple[int, dict[str, Any]]:
    put = await endpoint.answer(
        b"PUT",
        b"/latest/api/token",
        [(b"host", b"127.0.0.1"), (b"x-aws-ec2-metadata-token-ttl-seconds", b"60")],
        "127.0.0.1:1",
    )
    headers = [(b"host", b"127.0.0.1"), (b"x-aws-ec2-metadata-token", put.body)]
    reply = await endpoint.answer(b"GET", (IMDS_CREDS + "r").encode(), headers, "127.0.0.1:1")
    return reply.status, json.loads(reply.body) if reply.body else {}


@pytest.mark.parametrize("renewed_left", [3600.0, 1200.0])
async def test_imds_serves_only_credentials_with_21_minutes_left(
    short_dir: Path, renewed_left: float
) -> None:
    asked: list[str] = []
    left = [20 * 60.0]  # the agent's lease: servable to SDKs, too short for botocore's IMDS

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        asked.append(request["op"])
        if request["op"] == "renew":
            left[0] = renewed_left
            return {"ok": True}
        return _credentials(left[0])

    path = short_dir / "a.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(_fake_agent, path, answer)
        endpoint = Endpoint(AgentLink(str(path)), "r", "imds")
        status, body = await _imds_get(endpoint)
        if renewed_left > 21 * 60:
            assert status == 200 and body["AccessKeyId"] == "AKIA3600"
        else:
            assert status == 503 and "21 minutes" in body["message"]
        assert asked == ["credentials", "renew", "credentials"]
        await endpoint.link.aclose()
        nursery.cancel_scope.cancel()
