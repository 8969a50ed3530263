"""The trio side of ``exec`` and ``serve`` (see commands/endpoint.py)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from dyncreds.client import (
    EXIT_CANNOT_EXECUTE,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_OK,
    EXIT_SIGNAL_BASE,
    EXIT_USAGE,
)
from dyncreds.commands.common import CliError
from dyncreds.endpoint import ECS_PATH, AgentLink, Endpoint
from dyncreds.httpserve import bound_port, open_listeners, serve

# Removed from CMD's environment: any other identity would win over the endpoint.
IDENTITY_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)
ALWAYS_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# From a terminal, Ctrl-C and Ctrl-\ reach CMD directly (same process group):
# forwarding them too would deliver them twice.
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT)


def endpoint_env(url: str, token: str, token_file: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in IDENTITY_VARIABLES}
    env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = url
    if token_file is not None:
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(token_file)
        env.pop("AWS_CONTAINER_AUTHORIZATION_TOKEN", None)
    else:
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = token
    return env


def write_token_file(directory: Path, token: str) -> Path:
    """0600, no trailing newline, in a private directory."""
    path = directory / "token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    return path


async def run_exec(
    socket: str, role: str, command: list[str], region: str | None, token_file: bool
) -> int:
    link = AgentLink(socket)
    endpoint = Endpoint(link, role)
    listeners = await open_listeners("127.0.0.1", 0)
    url = f"http://127.0.0.1:{bound_port(listeners)}{endpoint.path}"
    with tempfile.TemporaryDirectory(prefix="dyncreds-exec-") as private:
        file = write_token_file(Path(private), endpoint.token) if token_file else None
        env = endpoint_env(url, endpoint.token, file)
        if region:
            env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
        env["DYNCREDS_ROLE"] = role
        forwarded = ALWAYS_FORWARDED + (() if sys.stdin.isatty() else TERMINAL_SIGNALS)
        # The listener is bound already: the child's first request waits in its
        # backlog until serving starts, a few microseconds later.
        with trio.open_signal_receiver(*forwarded) as signals:
            try:
                process = await trio.lowlevel.open_process(command, env=env)
            except FileNotFoundError:
                raise CliError(f"command not found: {command[0]}", EXIT_COMMAND_NOT_FOUND) from None
            except PermissionError:
                raise CliError(
                    f"cannot execute {command[0]}: permission denied", EXIT_CANNOT_EXECUTE
                ) from None
            async with trio.open_nursery() as nursery:
                await nursery.start(serve, endpoint, listeners)
                nursery.start_soon(_forward, signals, process)
                code = await process.wait()
                nursery.cancel_scope.cancel()
        await link.aclose()
    return code if code >= 0 else EXIT_SIGNAL_BASE - code


async def _forward(signals: Any, process: trio.Process) -> None:
    async for signum in signals:
        if process.returncode is None:
            process.send_signal(signum)


async def run_serve(
    socket: str, args: argparse.Namespace, host: str, port: int, region: str | None
) -> int:
    link = AgentLink(socket)
    loopback = ipaddress.ip_address(host).is_loopback
    endpoint = Endpoint(
        link,
        args.role,
        "imds" if args.imds else "ecs",
        extra_hosts=frozenset() if loopback else frozenset({host}),
        region=region,
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
            f"# warning: listening on {host}, not loopback; the token is all that guards it",
            file=sys.stderr,
        )
    if endpoint.mode == "imds":
        print(f"export AWS_EC2_METADATA_SERVICE_ENDPOINT={base}/")
    else:
        print(f"export AWS_CONTAINER_CREDENTIALS_FULL_URI={base}{ECS_PATH}{args.role}")
        if args.token_file:
            path = Path(args.token_file)
            write_token_file(path.parent, endpoint.token).rename(path)
            print(f"export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={path}")
        else:
            print(f"export AWS_CONTAINER_AUTHORIZATION_TOKEN={endpoint.token}")
    sys.stdout.flush()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, endpoint, listeners)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    await link.aclose()
    return EXIT_OK
