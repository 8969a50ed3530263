"""The trio side of ``exec`` and ``serve`` (see commands/endpoint.py): running the
endpoint, the child and its signals, the token file. Its own module so that only
those two commands load trio (import-linter's CLI start-up contract leaves it out
for that reason, and tests/test_cli_startup.py names it)."""

from __future__ import annotations

import argparse
import ctypes
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from dyncreds import logs, peer
from dyncreds.agentlink import AgentLink, Watch
from dyncreds.client import (
    EXIT_CANNOT_EXECUTE,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_OK,
    EXIT_SIGNAL_BASE,
    EXIT_USAGE,
    CliError,
)
from dyncreds.commands.sdkenv import IDENTITY_VARIABLES, child_env, private_files
from dyncreds.connections import raise_nofile
from dyncreds.endpoint import ECS_PATH, Endpoint
from dyncreds.httpserve import bound_port, open_listeners, serve

ALWAYS_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# Ctrl-C and Ctrl-\ at a terminal reach CMD directly (its process group): exec must
# neither die of them nor deliver them twice. exec blocks them and reads each with
# sigwaitinfo, which says who sent it: the terminal (SI_KERNEL) is not forwarded,
# a `kill` aimed at exec alone is.
TERMINAL_SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT})
SI_KERNEL = 0x80
PR_SET_PDEATHSIG = 1


def block_terminal_signals() -> None:
    """Before trio starts (every thread inherits the mask): see TERMINAL_SIGNALS."""
    signal.pthread_sigmask(signal.SIG_BLOCK, TERMINAL_SIGNALS)


def write_token_file(path: Path, token: str) -> Path:
    """0600, no trailing newline; written beside ``path`` and renamed over it, so a
    reader never sees half a token and an old file is simply replaced."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    try:
        os.replace(temporary, path)
    except OSError:
        os.unlink(temporary)
        raise
    return path


@contextmanager
def token_file(path: Path | None, token: str) -> Iterator[Path | None]:
    """The token file for the endpoint's life; removed at exit if it is still ours."""
    if path is None:
        yield None
        return
    try:
        write_token_file(path, token)
        ours = os.stat(path)
    except OSError as exc:
        raise CliError(f"--token-file {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    try:
        yield path
    finally:
        try:
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino):
                os.unlink(path)
        except OSError:
            pass


def _child_setup() -> None:
    """In CMD, before it runs: terminal signals as usual, and SIGTERM if exec dies
    (even of SIGKILL), so that CMD never outlives its endpoint unknowingly."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, TERMINAL_SIGNALS)
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # exec died before the request took hold
        os.kill(os.getpid(), signal.SIGTERM)


async def run_exec(
    socket: str, role: str, command: list[str], region: str | None, use_token_file: bool
) -> int:
    raise_nofile()
    logs.setup("warning")  # refusals and failures, throttled (logs.Throttle)
    link, watch = AgentLink(socket), Watch(socket)
    endpoint = Endpoint(link, role, watch=watch)
    listeners = await open_listeners("127.0.0.1", 0)
    variables = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{bound_port(listeners)}{endpoint.path}",
        "DYNCREDS_ROLE": role,
    }
    if region:
        variables["AWS_REGION"] = variables["AWS_DEFAULT_REGION"] = region
    with tempfile.TemporaryDirectory(prefix="dyncreds-exec-") as private:
        directory = Path(private)
        if use_token_file:
            path = write_token_file(directory / "token", endpoint.token)
            variables["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(path)
        else:
            variables["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = endpoint.token
        env = child_env(os.environ, directory, variables)
        # The listener is bound already: the child's first request waits in its
        # backlog until serving starts, a few microseconds later.
        with trio.open_signal_receiver(*ALWAYS_FORWARDED) as signals:
            try:
                process = await trio.lowlevel.open_process(
                    command, env=env, preexec_fn=_child_setup
                )
            except FileNotFoundError:
                raise CliError(f"command not found: {command[0]}", EXIT_COMMAND_NOT_FOUND) from None
            except PermissionError:
                raise CliError(
                    f"cannot execute {command[0]}: permission denied", EXIT_CANNOT_EXECUTE
                ) from None
            async with trio.open_nursery() as nursery:
                await nursery.start(serve, endpoint, listeners)
                nursery.start_soon(watch.run)
                nursery.start_soon(endpoint.reports.run)
                nursery.start_soon(_forward, signals, process)
                nursery.start_soon(_forward_terminal_signals, process)
                code = await process.wait()
                nursery.cancel_scope.cancel()
        await _finish(endpoint)
    return code if code >= 0 else EXIT_SIGNAL_BASE - code


async def _finish(endpoint: Endpoint) -> None:
    """The last hand-outs reach the audit log; the link closes."""
    with trio.move_on_after(5):
        await endpoint.reports.flush()
    await endpoint.link.aclose()


async def _forward(signals: Any, process: trio.Process) -> None:
    async for signum in signals:
        if process.returncode is None:
            process.send_signal(signum)


async def _forward_terminal_signals(process: trio.Process) -> None:
    while True:
        info = await trio.to_thread.run_sync(
            signal.sigwaitinfo, TERMINAL_SIGNALS, abandon_on_cancel=True
        )
        if info.si_code != SI_KERNEL and process.returncode is None:
            process.send_signal(info.si_signo)


def serve_lines(
    base: str, endpoint: Endpoint, token_path: Path | None, files: dict[str, str]
) -> list[str]:
    """What ``serve`` prints: the endpoint first (one or two lines), then what makes
    the role win over the shell's variables and the user's shared files."""
    if endpoint.mode == "imds":
        lines = [f"export AWS_EC2_METADATA_SERVICE_ENDPOINT={base}"]
    else:
        lines = [f"export AWS_CONTAINER_CREDENTIALS_FULL_URI={base}{ECS_PATH}{endpoint.role}"]
        if token_path is not None:
            lines.append(f"export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={token_path}")
        else:
            lines.append(f"export AWS_CONTAINER_AUTHORIZATION_TOKEN={endpoint.token}")
    lines += [f"export {k}={v}" for k, v in files.items()]
    exported = {line.split("=", 1)[0].removeprefix("export ") for line in lines}
    lines.append("unset " + " ".join(v for v in IDENTITY_VARIABLES if v not in exported))
    return lines


async def run_serve(
    socket: str, args: argparse.Namespace, host: str, port: int, region: str | None
) -> int:
    raise_nofile()
    logs.setup("warning")
    link, watch = AgentLink(socket), Watch(socket)
    loopback = peer.is_loopback(host)
    endpoint = Endpoint(
        link,
        args.role,
        "imds" if args.imds else "ecs",
        extra_hosts=frozenset() if loopback else frozenset({host}),
        region=region,
        peer_check=loopback,
        watch=watch,
    )
    try:
        listeners = await open_listeners(host, port)
    except OSError as exc:
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (an address of this "
            "machine is needed)",
            EXIT_USAGE,
        ) from None
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{bound_port(listeners)}"
    if not loopback:
        print(
            f"# warning: listening on {host}, not loopback: the kernel cannot tell who "
            "connects from elsewhere, so the token is all that guards this endpoint",
            file=sys.stderr,
        )
    wanted = Path(args.token_file) if args.token_file and not args.imds else None
    # Signals first: a SIGTERM right after the lines are printed still cleans up.
    with (
        trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals,
        tempfile.TemporaryDirectory(prefix="dyncreds-serve-") as private,
        token_file(wanted, endpoint.token) as path,
    ):
        files = private_files(Path(private), os.environ)
        for line in serve_lines(base, endpoint, path, files):
            print(line)
        sys.stdout.flush()
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, endpoint, listeners)
            nursery.start_soon(watch.run)
            nursery.start_soon(endpoint.reports.run)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
        await _finish(endpoint)
    return EXIT_OK
