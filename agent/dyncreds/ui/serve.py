"""``dyncreds ui``: serve the console on loopback with Hypercorn's trio worker,
print the address with its launch token, open a browser unless told not to.

Hypercorn's access log is off (the first request's query carries the token); the
Guard logs method, path and status instead.
"""

from __future__ import annotations

import sys
import webbrowser
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from dyncreds import paths
from dyncreds.client import EXIT_OK, EXIT_USAGE, CliError
from dyncreds.peer import is_loopback
from dyncreds.ui.app import build
from dyncreds.ui.guard import Sessions


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:PORT`` (or ``[::1]:PORT``); loopback only, PORT 0 = any free port."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise CliError(f"--listen {text!r}: want 127.0.0.1:PORT", EXIT_USAGE)
    if not is_loopback(host):
        raise CliError(
            f"--listen {text!r}: the console listens on loopback only (127.0.0.1 or ::1)",
            EXIT_USAGE,
        )
    return host, int(port)


async def _serve(p: paths.Paths, host: str, port: int, open_browser: bool) -> None:
    sessions = Sessions()
    guard = build(p, sessions)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.include_server_header = False
    async with trio.open_nursery() as nursery:
        app: Any = guard  # an ASGI 3 callable; Hypercorn's type names its own scope types
        binds = await nursery.start(partial(serve, app, config, mode="asgi"))
        address = str(binds[0]).removeprefix("http://")
        guard.host = address
        url = f"http://{address}/?token={sessions.token}"
        print(f"dyncreds console: {url}", flush=True)
        print("(Ctrl-C to stop; the address is for you only - it signs you in)", flush=True)
        if open_browser:
            await trio.to_thread.run_sync(webbrowser.open, url)


def run(p: paths.Paths, listen: str, open_browser: bool) -> int:
    host, port = parse_listen(listen)
    try:
        trio.run(_serve, p, host, port, open_browser)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"dyncreds: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
