"""dyncreds-shim ROLE: AWS's ``credential_process`` contract, backed by the dyncreds agent.

Every AWS SDK and CLI runs this program when it needs keys for a profile whose
``credential_process`` names it, so it sits on the start-up path of every AWS
program. It is therefore built for start-up time:

* standard library only, and only builtin modules on the hot path (``_socket``
  instead of ``socket``, which drags in ``selectors`` and ``enum``); ``json`` is
  imported only to read an error;
* the agent answers the ``credential_process`` op with the exact bytes the SDK
  wants, so on success the shim copies one line from the socket to stdout
  without decoding it.

The contract (botocore, the Go and JavaScript SDKs, AWS CLI v2): stdout holds the
credential JSON and nothing else; exit 0. On failure: one line on stderr that
starts with ``dyncreds-shim:``, non-zero exit, and never a prompt or a secret.

This module is also the single home of the socket-path rule: the agent imports
``socket_path`` from here, so the two can never disagree.

The ``dyncreds-shim`` command (shim/dyncreds-shim) runs it as ``__main__`` from its
compiled .pyc under ``python -I -S -X utf8``: no site, no user paths, no .pth files,
no locale decoding, and no teardown (``posix._exit`` once the answer is written).
What a run costs above the interpreter's start (in instructions, ``make bench
BENCH=shim``): loading ``_socket`` about two thirds, compiling that small script and
finding this .pyc a fifth, this module and its one round trip the rest.
"""

import _socket
import posix  # builtin; `os` is not: importing it costs ~10 % of the shim's run
import sys

TYPE_CHECKING = False  # mypy reads the block below; nothing imports `typing` at run time
if TYPE_CHECKING:
    from collections.abc import Mapping

# Exit statuses, so scripts (and tests) can tell failures apart.
EXIT_AGENT_ERROR = 1  # the agent answered with an error (unknown role, AWS refused, ...)
EXIT_USAGE = 2  # bad command line
EXIT_NOT_RUNNING = 3  # nothing listens on the socket
EXIT_TIMEOUT = 4  # the agent did not answer in time

# Well under the Go SDK's one-minute kill, and above a slow cold iam_user issuance
# (CreateUser + grants + key propagation on real AWS takes 5-15 s).
DEFAULT_TIMEOUT = 45.0
MAX_RESPONSE = 1 << 20
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its terminating NUL

START_HINT = "start it with `systemctl --user start dyncreds-agent.socket` or `dyncreds agent`"
# A system-mode agent (one for the host's users); tried when the user has none.
SYSTEM_SOCKET = "/run/dyncreds/agent.sock"


class _Environ:
    """The process environment read as text from ``posix.environ`` (bytes, as the
    kernel gave it), since ``os`` is not imported."""

    def get(self, name: str) -> "str | None":
        value = posix.environ.get(name.encode())
        return None if value is None else value.decode("utf-8", "surrogateescape")


def socket_path(env: "Mapping[str, str] | _Environ | None" = None) -> str:
    """Where the agent listens: ``$DYNCREDS_SOCKET``, else
    ``$XDG_RUNTIME_DIR/dyncreds/agent.sock``, else the runtime fallback below.

    Standard library only, in every case: the shim runs on every AWS program's
    start, under ``python -I -S`` and sometimes a Python that has nothing else
    installed. The agent uses this very function, so the two always agree.
    """
    env = _Environ() if env is None else env
    explicit = env.get("DYNCREDS_SOCKET")
    if explicit:
        return explicit
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return runtime + "/dyncreds/agent.sock"
    return runtime_fallback(env) + "/dyncreds/agent.sock"


def socket_paths(env: "Mapping[str, str] | _Environ | None" = None) -> "list[str]":
    """Where clients look, in order: ``$DYNCREDS_SOCKET`` alone when set; else the
    user's own socket (``socket_path``), then the system agent's. A client uses the
    first one an agent answers on."""
    env = _Environ() if env is None else env
    own = socket_path(env)
    return [own] if env.get("DYNCREDS_SOCKET") else [own, SYSTEM_SOCKET]


def runtime_fallback(env: "Mapping[str, str] | _Environ") -> str:
    """Without XDG_RUNTIME_DIR (ssh sessions, cron, CI): ``/run/user/UID`` when it
    is ours and private (the XDG rule, as platformdirs applies it), else
    ``$TMPDIR/runtime-UID`` (``/tmp`` by default), which the agent creates 0700."""
    uid = posix.geteuid()
    run_user = f"/run/user/{uid}"
    try:
        info = posix.lstat(run_user)
    except OSError:
        info = None
    if info is not None and info.st_uid == uid and info.st_mode & 0o170777 == 0o040700:
        return run_user
    temp = env.get("TMPDIR") or "/tmp"
    if not temp.startswith("/"):
        temp = "/tmp"
    return temp.rstrip("/") + f"/runtime-{uid}"


def valid_role_name(name: str) -> bool:
    """``[A-Za-z0-9][A-Za-z0-9_-]{0,63}`` without importing ``re``."""
    if not 1 <= len(name) <= 64 or not name.isascii():
        return False
    if not name[0].isalnum():
        return False
    return all(c.isalnum() or c in "_-" for c in name)


def _fail(message: str, status: int) -> int:
    posix.write(2, ("dyncreds-shim: " + message + "\n").encode("utf-8", "replace"))
    return status


def _explain(response: bytes) -> tuple[str, int]:
    """Turn an agent error envelope into the one line the user sees."""
    import json

    try:
        error = json.loads(response)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return "the agent sent an unreadable answer", EXIT_AGENT_ERROR
    return f"{message} ({code})", EXIT_AGENT_ERROR


def request_line(role: str) -> bytes:
    """The one request the shim sends. The role name was checked
    (``valid_role_name``), so it needs no JSON escaping."""
    return b'{"op":"credential_process","role":"' + role.encode() + b'"}\n'


def _alive(path: str) -> bool:
    """Does the agent answer a ping? (Only after a timeout: is it busy, or stuck?)"""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect(path)
        sock.sendall(b'{"op":"ping"}\n')
        return sock.recv(4096).startswith(b'{"ok":true')
    except OSError:
        return False
    finally:
        sock.close()


def _connect(sock: _socket.socket, path: str) -> tuple[str, int] | None:
    """Connect; or the (message, exit status) saying why not. A full backlog
    (EAGAIN: the agent is working through a flood of connections) is retried
    until the socket's timeout."""
    deadline = None
    while True:
        try:
            sock.connect(path)
            return None
        except BlockingIOError:
            import time  # (only here: the hot path imports nothing it does not use)

            if deadline is None:
                deadline = time.monotonic() + (sock.gettimeout() or 0.0)
            if time.monotonic() > deadline:
                return f"the agent socket {path} is not accepting connections", EXIT_AGENT_ERROR
            time.sleep(0.002)
        except TimeoutError:
            raise
        except OSError as exc:
            return _connect_failed(exc, path)


def _connect_failed(exc: OSError, path: str) -> tuple[str, int]:
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        message = f"the dyncreds agent is not running (no socket at {path}); " + START_HINT
        return message, EXIT_NOT_RUNNING
    if isinstance(exc, PermissionError):
        return f"permission denied on the agent socket {path}", EXIT_AGENT_ERROR
    if len(path.encode()) > MAX_SOCKET_PATH:
        return (
            f"the agent socket path is longer than Unix sockets allow ({MAX_SOCKET_PATH} "
            f"bytes): {path[:60]}...; set DYNCREDS_SOCKET to a shorter path",
            EXIT_NOT_RUNNING,
        )
    return f"cannot connect to the agent socket {path}: {exc}", EXIT_NOT_RUNNING


def _receive_line(sock: _socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > MAX_RESPONSE:
            break
    return b"".join(chunks)


def fetch(role: str, path: str, timeout: float) -> tuple[bytes, str, int]:
    """Ask the agent for ROLE's credential_process object.

    Returns (stdout bytes, error message, exit status).
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        refused = _connect(sock, path)
        if refused is not None:
            return b"", refused[0], refused[1]
        sock.sendall(request_line(role))
        response = _receive_line(sock)
    except TimeoutError:
        if _alive(path):
            return (
                b"",
                f"the dyncreds agent is still issuing credentials for {role} after "
                f"{timeout:g}s (AWS is slow to answer); try again, or see `dyncreds status`",
                EXIT_TIMEOUT,
            )
        return b"", f"the dyncreds agent did not answer within {timeout:g}s", EXIT_TIMEOUT
    except OSError as exc:
        return b"", f"talking to the dyncreds agent failed: {exc.strerror or exc}", EXIT_AGENT_ERROR
    finally:
        sock.close()
    if not response.endswith(b"\n"):
        return b"", "the dyncreds agent closed the connection without answering", EXIT_AGENT_ERROR
    if response.startswith(b'{"Version"'):
        return response, "", 0
    message, status = _explain(response)
    return b"", message, status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        if args and args[0] in ("-h", "--help"):
            posix.write(1, b"usage: dyncreds-shim ROLE\n")
            return 0
        return _fail("usage: dyncreds-shim ROLE", EXIT_USAGE)
    role = args[0]
    if not valid_role_name(role):
        return _fail(f"invalid role name {role[:80]!r}", EXIT_USAGE)
    timeout = DEFAULT_TIMEOUT
    raw_timeout = _Environ().get("DYNCREDS_SHIM_TIMEOUT")
    if raw_timeout:
        try:
            timeout = float(raw_timeout)
        except ValueError:
            return _fail(f"DYNCREDS_SHIM_TIMEOUT is not a number: {raw_timeout[:40]!r}", EXIT_USAGE)
    try:
        path = socket_path()
    except OSError as exc:  # an environment too broken to name a path
        return _fail(f"cannot find the agent socket: {exc}", EXIT_NOT_RUNNING)
    out, message, status = fetch(role, path, timeout)
    if status == EXIT_NOT_RUNNING and not _Environ().get("DYNCREDS_SOCKET"):
        # The user runs no agent of their own: the host's system agent, if any.
        out, system_message, status = fetch(role, SYSTEM_SOCKET, timeout)
        if status != EXIT_NOT_RUNNING:
            message = system_message
        else:
            message = message.replace(f" at {path})", f" at {path} nor {SYSTEM_SOCKET})")
    if status:
        return _fail(message, status)
    view = memoryview(out)
    while view:
        view = view[posix.write(1, view) :]
    return 0


if __name__ == "__main__":
    # Everything is written (posix.write: no buffer to flush) and nothing needs
    # tearing down: skip the interpreter's teardown, a fifth of a bare Python's run,
    # which the SDK waiting for this process would otherwise wait for too.
    posix._exit(main())
