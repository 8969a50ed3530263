"""``dyncreds``: the command line. One module per area - ``lease`` (status,
creds, exec, revoke, renew), ``roles`` (check, reload, aws-config, role ...),
``root`` (init, configure root, rotate-root) - and this one, which builds the
parser and runs the chosen command.

Talks to the agent through client.py. Exit codes: 0 success, 1 the agent
answered with an error, 2 usage or configuration error, 3 the agent is not
running (the message says how to start it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from dyncreds import __version__
from dyncreds.client import EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE
from dyncreds.commands import audit, endpoint, fleet, lease, login, roles, root, setup
from dyncreds.commands.common import CliError, get_paths


def cmd_agent(args: argparse.Namespace) -> int:
    from dyncreds import daemon, paths  # trio and the AWS backend: only for this command

    where = (args.config_dir, args.state_dir, args.socket)
    return daemon.run(
        paths.resolve(*where),
        log_format=args.log_format,
        log_level=args.log_level,
        system_paths=paths.resolve(*where, system=True),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from dyncreds import demo

    return demo.main(keep=args.keep, console=args.console)


def cmd_ui(args: argparse.Namespace) -> int:
    try:  # Starlette, Hypercorn, Jinja2: only for this command, from the "ui" extra
        from dyncreds.ui import serve
    except ImportError as exc:
        raise CliError(
            f"the web console needs {(exc.name or 'its libraries').split('.')[0]}: "
            "pip install 'dyncreds[ui]'",
            EXIT_USAGE,
        ) from None
    return serve.run(get_paths(args), args.listen, open_browser=not args.no_open)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"dyncreds {__version__}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    # Global flags may stand before or after the command. SUPPRESS keeps a
    # subcommand's parser from resetting a flag given before it; main() fills in
    # the defaults afterwards.
    common = argparse.ArgumentParser(add_help=False)
    hide = argparse.SUPPRESS
    common.add_argument(
        "--config-dir", default=hide, help="configuration directory (DYNCREDS_CONFIG_DIR)"
    )
    common.add_argument("--state-dir", default=hide, help="state directory (DYNCREDS_STATE_DIR)")
    common.add_argument("--socket", default=hide, help="agent socket path (DYNCREDS_SOCKET)")
    common.add_argument("--json", action="store_true", default=hide, help="machine-readable output")

    parser = argparse.ArgumentParser(
        prog="dyncreds",
        parents=[common],
        description="Short-lived AWS credentials for the programs on this machine.",
    )
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True

    def add(name: str, fn: Any, help_text: str, flags: bool = True) -> argparse.ArgumentParser:
        # flags=False: a command the global flags mean nothing to (demo, version ...).
        parents = [common] if flags else []
        p = sub.add_parser(name, parents=parents, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    p = add("agent", cmd_agent, "run the agent in the foreground (systemd runs it this way)")
    p.add_argument("--log-format", choices=["text", "json"], help="log line format")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level")
    parser.add_argument("--version", action="version", version=f"dyncreds {__version__}")
    lease.add_commands(add)
    endpoint.add_commands(add)
    login.add_commands(add)
    audit.add_commands(add)
    roles.add_commands(add, sub, common)
    root.add_commands(add, sub, common)
    fleet.add_commands(sub, common)
    setup.add_commands(add)
    p = add("ui", cmd_ui, "serve the web console on loopback and open it in a browser")
    p.add_argument("--listen", default="127.0.0.1:0", help="127.0.0.1:PORT (default: a free port)")
    p.add_argument("--no-open", action="store_true", help="print the address, open no browser")
    p = add("demo", cmd_demo, "the whole flow, offline, on an embedded AWS stand-in", False)
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--console", action="store_true", help="then serve the web console on it until Ctrl-C"
    )
    add("version", cmd_version, "print the version", False)
    return parser


GLOBAL_DEFAULTS: dict[str, Any] = {
    "config_dir": None,
    "state_dir": None,
    "socket": None,
    "json": False,
}


# What to do next, for the error codes a person can act on.
HINTS = {
    "unknown_role": "see `dyncreds roles`, or add it with `dyncreds role create`",
    "upstream": "AWS refused or could not be reached; `dyncreds status` shows the details",
    "unavailable": "see `dyncreds status` and the agent's log",
    "locked": "run `dyncreds unlock`",
}


def report(exc: CliError, *, as_json: bool) -> None:
    """People get a sentence and the next step; ``--json`` gets the code too."""
    if as_json:
        code = exc.code or ("not_running" if exc.status == EXIT_NOT_RUNNING else "error")
        print(json.dumps({"ok": False, "error": {"code": code, "message": str(exc)}}))
        return
    hint = HINTS.get(exc.code or "")
    message = str(exc)
    if hint and hint not in message:
        message = f"{message.rstrip('.')}; {hint}"
    print(f"dyncreds: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `exec ROLE -- CMD`: argparse must not read CMD's own flags.
    if "exec" in argv and "--" in argv:
        split = argv.index("--")
        args = parser.parse_args(argv[:split])
        args.command = argv[split + 1 :]
    else:
        args = parser.parse_args(argv)
    for flag, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, flag):
            setattr(args, flag, default)
    try:
        status: int = args.fn(args)
        return status
    except CliError as exc:
        report(exc, as_json=args.json)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
