"""``exec`` and ``serve``: a program gets a credential endpoint, not keys.

``exec ROLE -- CMD`` stays CMD's parent: it serves the ECS container-credentials
protocol on a random loopback port with a random token, hands CMD the URL and
the token (and no identity of any SDK: commands/sdkenv.py), forwards signals
(not the terminal's Ctrl-C, which CMD gets itself: exec keeps serving until CMD
exits), and exits with CMD's status (128+N when CMD died of signal N). The token
dies with exec; CMD gets SIGTERM if exec is killed.
``--env`` gives CMD static keys instead (0.1's behaviour). ``serve`` runs the
same endpoint in the foreground for containers, IDEs and tools that only know
IMDS (``--imds``). The trio side lives in ``endpoint_run`` and is imported only
when one of these runs, so that other commands start fast.
"""

from __future__ import annotations

import argparse
import os

from dyncreds.client import (
    EXIT_CANNOT_EXECUTE,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    Client,
    CliError,
)
from dyncreds.commands.common import Commands, get_paths
from dyncreds.commands.completion import offer_files, offer_roles
from dyncreds.commands.lease import exec_env, fetch_credentials, role_region


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("usage: dyncreds exec ROLE [--env] -- CMD [ARG...]", EXIT_USAGE)
    creds = fetch_credentials(args)["credentials"]  # fail fast, and warm the lease
    region = role_region(args)
    if args.env:
        env = exec_env(args.role, creds, region)
        try:
            os.execvpe(command[0], command, env)
        except FileNotFoundError:
            raise CliError(f"command not found: {command[0]}", EXIT_COMMAND_NOT_FOUND) from None
        except PermissionError:
            raise CliError(
                f"cannot execute {command[0]}: permission denied", EXIT_CANNOT_EXECUTE
            ) from None
    import trio

    from dyncreds.commands.endpoint_run import block_terminal_signals, run_exec

    socket = str(get_paths(args).socket)
    block_terminal_signals()
    return trio.run(run_exec, socket, args.role, command, region, args.token_file)


def parse_listen(text: str) -> tuple[str, int]:
    import ipaddress

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise CliError(f"--listen wants ADDRESS:PORT, got {text!r}", EXIT_USAGE)
    host = host.strip("[]") or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise CliError(f"--listen wants an IP address, got {host!r}", EXIT_USAGE) from None
    return host, int(port)


# IMDS answers must keep more than 21 minutes (endpoint.IMDS_MIN_REMAINING); a
# role whose leases live less than this would be renewed every few minutes.
IMDS_MIN_TTL = 30 * 60


def check_imds(args: argparse.Namespace, host: str) -> None:
    """IMDSv2 has no secret (anyone who reaches it may PUT for a session token):
    loopback only, where the kernel says who connects; and a ttl long enough."""
    from dyncreds.peer import is_loopback

    if not is_loopback(host):
        raise CliError(
            f"serve --imds listens on loopback only (got --listen {args.listen}): IMDS has "
            "no secret to guard it elsewhere; use the ECS endpoint (serve without --imds)",
            EXIT_USAGE,
        )
    with Client(get_paths(args).socket) as client:
        roles = client.request("roles")["roles"]
    ttl = next((r.get("ttl") for r in roles if r.get("name") == args.role), None)
    if isinstance(ttl, int) and ttl < IMDS_MIN_TTL:
        raise CliError(
            f"role {args.role}: its ttl ({ttl // 60}m) cannot give IMDS clients the more "
            "than 21 minutes botocore needs (it stretches shorter credentials past their "
            f'expiry); set ttl = "{IMDS_MIN_TTL // 60}m" or more, or serve it without --imds',
            EXIT_USAGE,
        )


def cmd_serve(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    socket = str(get_paths(args).socket)
    fetch_credentials(args)  # fail fast: unknown role, agent not running
    if args.imds:
        check_imds(args, host)
    import trio

    from dyncreds.commands.endpoint_run import run_serve

    try:
        return trio.run(run_serve, socket, args, host, port, role_region(args))
    except KeyboardInterrupt:
        return EXIT_OK


def add_commands(cli: Commands) -> None:
    p = cli.add(
        "exec",
        cmd_exec,
        "run a command that gets the role's credentials from a loopback endpoint "
        "(refreshed as it runs), or as static variables with --env",
    )
    offer_roles(p.add_argument("role", help="the role's name"))
    p.add_argument("--env", action="store_true", help="static key variables instead of an endpoint")
    p.add_argument(
        "--token-file",
        action="store_true",
        help="hand the endpoint token as a file (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)",
    )
    # Everything after "--" is the command (main() splits it off before parsing).
    p.add_argument("command", nargs="*", help="-- CMD [ARG...]")
    p = cli.add("serve", cmd_serve, "a credential endpoint in the foreground (ECS, or IMDSv2)")
    offer_roles(p.add_argument("role", help="the role's name"))
    p.add_argument(
        "--listen",
        default="127.0.0.1:0",
        help="ADDRESS:PORT to listen on (default: loopback, a free port)",
    )
    p.add_argument("--imds", action="store_true", help="serve IMDSv2 instead of the ECS protocol")
    offer_files(
        p.add_argument(
            "--token-file", help="write the ECS token to this file (0600) instead of printing it"
        )
    )
