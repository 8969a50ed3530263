"""The one blocking client of the agent's socket, with the exit codes and the
"how to start the agent" hint.

The CLI, the benchmarks and the tests use this; the shim keeps its own
stdlib-only copy of the wire (it must not import the package), and
tests/test_client.py checks that the two agree on the hint, the exit codes and
the request line.
"""

from __future__ import annotations

import _socket  # builtin; `socket` builds enums on import (a tenth of the CLI's start-up)
import json
import os
import time

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

# Every exit status of the CLI; the shim uses the same 1-3 (and its own 4, timeout).
EXIT_OK, EXIT_AGENT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
# The shell's conventions, which `exec` keeps: CMD cannot run, CMD not found, CMD
# (or the CLI itself, on Ctrl-C) died of signal N.
EXIT_CANNOT_EXECUTE, EXIT_COMMAND_NOT_FOUND, EXIT_SIGNAL_BASE = 126, 127, 128
START_HINT = "start it with `systemctl --user start dyncreds-agent.socket` or `dyncreds agent`"


class CliError(Exception):
    """Something the user should read: raised by this client and by the CLI's
    commands. ``status`` is the exit code, ``code`` the agent's error code when the
    agent answered with one."""

    def __init__(self, message: str, status: int = EXIT_AGENT_ERROR, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def _connect(sock: _socket.socket, path: str, timeout: float) -> None:
    """connect(); a full backlog (EAGAIN: the agent is accepting a flood of
    connections, closing idle ones) is tried again until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)


class Client:
    """Newline-delimited JSON over the Unix socket; one connection, many requests."""

    def __init__(self, path: Path | str, timeout: float = 120.0):
        self.path = os.fspath(path)
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""

    def _connect(self) -> _socket.socket:
        if self._sock is None:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                _connect(sock, self.path, self.timeout)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                raise CliError(
                    f"the dyncreds agent is not running (no socket at {self.path}); {START_HINT}",
                    EXIT_NOT_RUNNING,
                ) from None
            except OSError as exc:
                sock.close()
                raise CliError(
                    f"cannot connect to {self.path}: {exc.strerror or exc}", EXIT_NOT_RUNNING
                ) from None
            self._sock = sock
        return self._sock

    def send_line(self, line: bytes) -> dict[str, Any]:
        """Send one raw request line; return the decoded response, error or not."""
        sock = self._connect()
        try:
            sock.sendall(line if line.endswith(b"\n") else line + b"\n")
            while b"\n" not in self._buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    self.close()
                    raise CliError("the agent closed the connection without answering")
                self._buffer += chunk
        except TimeoutError:
            self.close()
            raise CliError(f"the agent did not answer within {self.timeout:g}s") from None
        except OSError as exc:
            self.close()
            raise CliError(f"talking to the agent failed: {exc.strerror or exc}") from None
        line, _, self._buffer = self._buffer.partition(b"\n")
        response: dict[str, Any] = json.loads(line)
        return response

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request; the response as it came, ``{"ok": false, ...}`` included."""
        return self.send_line(json.dumps({"op": op, **fields}).encode())

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request; an error response raises ``CliError``."""
        response = self.call(op, **fields)
        if not response.get("ok", "Version" in response):
            error = response.get("error") or {}
            raise CliError(
                str(error.get("message", "the agent reported an error")),
                code=str(error.get("code", "internal")),
            )
        return response


def request(path: Path | str, op: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
    """One request on a connection of its own; the raw response."""
    with Client(path, timeout) as client:
        return client.call(op, **fields)
