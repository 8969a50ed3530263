"""The socket server, in process, against a real Unix socket: limits, hostile
input, back-pressure, drain."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from dyncreds import protocol
from dyncreds.server import Limits, Server, SocketSetupError, bind_unix, ensure_private_dir


async def echo_handler(request: protocol.AnyRequest) -> bytes:
    if isinstance(request, protocol.GetCredentials) and request.role == "slow":
        await trio.sleep(0.5)
    if isinstance(request, protocol.GetCredentials) and request.role == "boom":
        raise RuntimeError("bug")
    return protocol.ok({"op": type(request).__name__})


ServerFactory = Callable[..., Awaitable[tuple[Server, Path]]]


@pytest.fixture
async def serve(short_dir: Path) -> AsyncIterator[ServerFactory]:
    async with trio.open_nursery() as nursery:

        async def start(
            limits: Limits | None = None,
            uid: int | None = None,
            handler: Callable[..., Awaitable[bytes]] = echo_handler,
        ) -> tuple[Server, Path]:
            path = short_dir / "run" / "s.sock"
            server = Server(handler, limits or Limits(), uid=uid)
            sock = bind_unix(path)
            await nursery.start(server.serve, sock, nursery)
            return server, path

        yield start
        nursery.cancel_scope.cancel()


async def connect(path: Path) -> trio.SocketStream:
    return await trio.open_unix_socket(str(path))


_pending: dict[int, bytes] = {}


async def read_line(stream: trio.SocketStream) -> bytes:
    """One line; bytes after it are kept for the next call on the same stream."""
    data = _pending.pop(id(stream), b"")
    while b"\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return data
        data += chunk
    line, _, rest = data.partition(b"\n")
    if rest:
        _pending[id(stream)] = rest
    return line + b"\n"


async def ask(path: Path, line: bytes) -> dict[str, object]:
    stream = await connect(path)
    async with stream:
        await stream.send_all(line)
        result: dict[str, object] = json.loads(await read_line(stream))
        return result


async def test_modes_and_pipelined_requests(serve: ServerFactory) -> None:
    _, path = await serve()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700"
    stream = await connect(path)
    async with stream:
        await stream.send_all(b'{"op":"ping"}\n\n{"op":"status"}\n')
        first = json.loads(await read_line(stream))
        assert first == {"ok": True, "op": "Ping"}
        second = await read_line(stream)
        assert json.loads(second) == {"ok": True, "op": "Status"}


async def test_bad_lines_get_errors_and_connection_survives(serve: ServerFactory) -> None:
    _, path = await serve()
    stream = await connect(path)
    async with stream:
        for line, code in [
            (b"garbage", "bad_request"),
            (b'{"op":"zap"}', "unknown_op"),
            (b'{"op":"credentials","role":"boom"}', "internal"),
        ]:
            await stream.send_all(line + b"\n")
            body = json.loads(await read_line(stream))
            assert body["error"]["code"] == code
        await stream.send_all(b'{"op":"ping"}\n')
        assert json.loads(await read_line(stream))["ok"] is True


async def test_line_over_64k_is_refused_and_closed(serve: ServerFactory) -> None:
    _, path = await serve()
    stream = await connect(path)
    async with stream:
        try:
            await stream.send_all(b"x" * (70 * 1024))
        except trio.BrokenResourceError:
            pass
        body = json.loads(await read_line(stream))
        assert body["error"]["code"] == "too_large"
        assert await stream.receive_some(10) == b""
    assert (await ask(path, b'{"op":"ping"}\n'))["ok"] is True


async def test_other_uid_is_forbidden(serve: ServerFactory) -> None:
    # The server believes it belongs to another uid: our own connection is then a
    # stranger's, which exercises the SO_PEERCRED check without root.
    server, path = await serve(uid=os.getuid() + 1)
    body = await ask(path, b'{"op":"ping"}\n')
    assert body["error"]["code"] == "forbidden"  # type: ignore[index]
    assert server.counters["refused"] == 1


async def test_idle_connection_is_closed(
    serve: ServerFactory, autojump_clock: trio.testing.MockClock
) -> None:
    _, path = await serve(Limits(idle_timeout=5))
    stream = await connect(path)
    async with stream:
        with trio.fail_after(10):
            assert await stream.receive_some(10) == b""


async def test_at_the_cap_the_longest_idle_connection_makes_room(serve: ServerFactory) -> None:
    server, path = await serve(Limits(max_connections=2))
    held = [await connect(path) for _ in range(2)]
    for stream in held:
        await stream.send_all(b'{"op":"ping"}\n')
        await read_line(stream)
    # A third client is answered at once: the connection idle longest is closed
    # for it (2,000 idle connections used to lock every client out for minutes).
    third = await connect(path)
    await third.send_all(b'{"op":"ping"}\n')
    with trio.fail_after(2):
        assert json.loads(await read_line(third))["ok"] is True
        assert await held[0].receive_some(10) == b""
    await held[1].send_all(b'{"op":"ping"}\n')
    with trio.fail_after(2):
        assert json.loads(await read_line(held[1]))["ok"] is True
    assert server._held.counters["closed_waiting"] == 1
    for stream in (third, *held):
        await stream.aclose()


async def test_when_every_connection_is_busy_new_clients_queue(serve: ServerFactory) -> None:
    _server, path = await serve(Limits(max_connections=2))
    busy = [await connect(path) for _ in range(2)]
    for stream in busy:
        await stream.send_all(b'{"op":"credentials","role":"slow"}\n')
    await trio.testing.wait_all_tasks_blocked()
    # Nothing waits to be closed: a third client queues until an answer is sent
    # (and that connection, idle then, is closed for it).
    started = trio.current_time()
    third = await connect(path)
    await third.send_all(b'{"op":"ping"}\n')
    with trio.fail_after(5):
        assert json.loads(await read_line(third))["ok"] is True
    assert trio.current_time() - started >= 0.4
    for stream in (third, *busy):
        await stream.aclose()


async def test_a_request_trickling_in_is_closed_after_the_wait_timeout(
    serve: ServerFactory, autojump_clock: trio.testing.MockClock
) -> None:
    _, path = await serve(Limits(idle_timeout=5))
    stream = await connect(path)
    async with stream:
        # One byte every 4 s: each under the idle timeout, the whole line not.
        with trio.fail_after(30):
            for byte in b'{"op":"ping"}':
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    break
                await trio.sleep(4)
            assert await stream.receive_some(10) == b""


async def test_drain_finishes_in_flight_request(serve: ServerFactory) -> None:
    server, path = await serve()
    busy = await connect(path)
    idle = await connect(path)
    await busy.send_all(b'{"op":"credentials","role":"slow"}\n')
    await trio.testing.wait_all_tasks_blocked()  # the slow request is in its handler
    server.drain()
    assert json.loads(await read_line(busy))["ok"] is True
    assert await idle.receive_some(10) == b""
    with trio.fail_after(5):
        await server.wait_idle()


def test_runtime_dir_checks(short_dir: Path) -> None:
    loose = short_dir / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    with pytest.raises(SocketSetupError, match="lets others in"):
        ensure_private_dir(loose)
    link = short_dir / "link"
    link.symlink_to(short_dir)
    with pytest.raises(SocketSetupError, match="symlink"):
        ensure_private_dir(link)


def test_stale_socket_replaced_live_one_refused(short_dir: Path) -> None:
    path = short_dir / "d" / "a.sock"
    first = bind_unix(path)
    with pytest.raises(SocketSetupError, match="already listening"):
        bind_unix(path)
    first.close()  # the file stays behind, nobody answers: stale
    second = bind_unix(path)
    second.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(SocketSetupError, match="not a socket"):
        bind_unix(path)


def test_socket_path_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    with pytest.raises(SocketSetupError, match="too long"):
        bind_unix(deep / "agent.sock")
