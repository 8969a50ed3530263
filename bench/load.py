"""A load generator that is not the bottleneck: several processes, each an
asyncio loop with many concurrent clients on a Unix socket. Also the ceiling: a
Unix socket server (trio, like the agent) that answers a fixed line and does
nothing else.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REQUEST = b'{"op":"credentials","role":"r"}\n'
FIXED = b'{"ok":true,"credentials":{"Version":1},"lease":{"id":"r/00000000"}}\n'


async def _http_answer(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 response: status line + headers + Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return b'{"ok":true' if head.startswith(b"HTTP/1.1 200") else head[:40]


async def _client(
    path: str, persistent: bool, stop_at: float, latencies: list[float], counters: dict[str, int]
) -> None:
    """``path`` is a Unix socket, or ``HOST:PORT/PATH#TOKEN`` for an HTTP endpoint."""
    reader = writer = None
    http = "#" in path  # HOST:PORT/PATH#TOKEN: an HTTP endpoint
    if http:
        hostport, _, rest = path.partition("/")
        target, _, token = rest.partition("#")
        host, port = hostport.rsplit(":", 1)
        request = (
            f"GET /{target} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: {token}\r\n\r\n"
        ).encode()
    else:
        request = REQUEST
    while time.perf_counter() < stop_at:
        start = time.perf_counter()
        try:
            if writer is None:
                if http:
                    reader, writer = await asyncio.open_connection(host, int(port))
                else:
                    reader, writer = await asyncio.open_unix_connection(path)
            assert reader is not None
            writer.write(request)
            line = await (_http_answer(reader) if http else reader.readline())
            if not line.startswith(b'{"ok":true'):
                counters["errors"] += 1
            else:
                counters["ok"] += 1
                latencies.append(time.perf_counter() - start)
            if not persistent:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError):
            counters["errors"] += 1
            writer = None
    if writer is not None:
        writer.close()


def _worker(
    path: str, clients: int, persistent: bool, start_at: float, seconds: float, out: Any
) -> None:
    async def main() -> None:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        latencies: list[float] = []
        counters = {"ok": 0, "errors": 0}
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(
            *(_client(path, persistent, stop_at, latencies, counters) for _ in range(clients))
        )
        out.put((counters, latencies))

    asyncio.run(main())


def run_load(
    path: str, clients: int, persistent: bool, seconds: float = 3.0, processes: int | None = None
) -> dict[str, Any]:
    processes = processes or min(clients, max(2, (os.cpu_count() or 2)))
    per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    per = [n for n in per if n]
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.perf_counter() + 0.5
    workers = [
        ctx.Process(target=_worker, args=(path, n, persistent, start_at, seconds, out)) for n in per
    ]
    for worker in workers:
        worker.start()
    ok = errors = 0
    latencies: list[float] = []
    for _ in workers:
        counters, samples = out.get(timeout=seconds + 60)
        ok += counters["ok"]
        errors += counters["errors"]
        latencies += samples
    for worker in workers:
        worker.join()
    latencies.sort()

    def pct(p: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 2)
            if latencies
            else 0.0
        )

    return {
        "clients": clients,
        "mode": "persistent" if persistent else "new-connection",
        "req_per_s": round(ok / seconds),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


def serve_fixed(path: str) -> None:
    """The ceiling: read a line, answer FIXED, repeat."""
    import trio

    async def handle(stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    _, _, buffer = buffer.partition(b"\n")
                    await stream.send_all(FIXED)
        except trio.BrokenResourceError:
            pass

    async def main() -> None:
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(1024)
        await trio.serve_listeners(handle, [trio.SocketListener(sock)])

    trio.run(main)


HTTP_FIXED_BODY = b'{"AccessKeyId":"AKIAEXAMPLE","SecretAccessKey":"x","Token":"","Expiration":"x"}'


def serve_h11_fixed(port_out: Any, body: bytes = HTTP_FIXED_BODY) -> None:
    """The endpoint's floor: trio + h11 parsing each request as the endpoint does
    (a fresh h11.Connection per request), answering fixed bytes and nothing else."""
    import h11
    import trio

    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Cache-Control: no-store\r\n\r\n" % len(body) + body
    )

    async def handle(stream: trio.SocketStream) -> None:
        pending = b""
        try:
            while True:
                conn = h11.Connection(h11.SERVER)
                if pending:
                    conn.receive_data(pending)
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                await stream.send_all(answer)
                pending, closed = conn.trailing_data
                if closed:
                    return
        except trio.BrokenResourceError:
            pass

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port_out.put(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(handle, listeners)

    trio.run(main)


@contextmanager
def fixed_http_server(body: bytes = HTTP_FIXED_BODY) -> Iterator[int]:
    """``serve_h11_fixed`` in a process of its own; its port."""
    ctx = mp.get_context("fork")
    ports = ctx.Queue()
    server = ctx.Process(target=serve_h11_fixed, args=(ports, body), daemon=True)
    server.start()
    try:
        yield int(ports.get(timeout=30))
    finally:
        server.terminate()
        server.join()


def h11_floor(clients: int = 64) -> dict[str, Any]:
    """Requests/s of ``serve_h11_fixed`` under the same load as the endpoint."""
    with fixed_http_server() as port:
        return run_load(f"127.0.0.1:{port}/role/r#token", clients, True)


if __name__ == "__main__":
    serve_fixed(sys.argv[1])
