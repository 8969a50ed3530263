"""``dyncreds``: the command line. One module per area - ``lease`` (status,
creds, revoke, renew, rotate), ``endpoint`` (exec, serve), ``login``, ``audit``,
``roles`` (check, reload, aws-config, role ...), ``root`` (init, configure root,
rotate-root, unlock, lock), ``fleet``, ``setup`` (install-units), ``completion`` -
each adding its commands with ``add_commands(cli)``; this one builds the parser,
adds ``agent``, ``ui``, ``demo`` and ``version`` (each a lazy import of what it
runs), and runs the chosen command. ``imds`` has no command: ``check`` and
``status`` ask it.

Talks to the agent through client.py, which names every exit status: 0 success,
1 the agent answered with an error, 2 usage or configuration error, 3 the agent is
not running (the message says how to start it); ``exec`` keeps the shell's 126,
127 and 128+N.

Nothing heavy is imported at start-up (see commands/common.py): a command imports
what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import sys

from dyncreds import __version__
from dyncreds.client import EXIT_NOT_RUNNING, EXIT_OK, EXIT_SIGNAL_BASE, EXIT_USAGE, CliError
from dyncreds.commands import (
    audit,
    completion,
    endpoint,
    fleet,
    lease,
    login,
    roles,
    root,
    setup,
)
from dyncreds.commands.common import Commands, get_paths
from dyncreds.commands.completion import offer_directories, offer_files

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

# In the order `dyncreds --help` lists them (after `agent`).
MODULES = (lease, endpoint, login, audit, roles, root, fleet, setup, completion)


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

    if args.console:
        _console_libraries()  # before the walk, not after it
    return demo.main(keep=args.keep, console=args.console)


def _console_libraries() -> None:
    """Starlette, Hypercorn, Jinja2: only for the console, from the "ui" extra (not
    on PyPI under our name: the advice installs from the checkout)."""
    try:
        import dyncreds.ui.serve  # noqa: F401
    except ImportError as exc:
        raise CliError(
            f"the web console needs {(exc.name or 'its libraries').split('.')[0]} "
            "(the [ui] extra): `pipx install --force './dyncreds[demo,ui]'` beside the "
            "checkout, or `pip install './dyncreds[ui]'` into its venv",
            EXIT_USAGE,
        ) from None


def cmd_ui(args: argparse.Namespace) -> int:
    _console_libraries()
    from dyncreds.ui import serve

    return serve.run(get_paths(args), args.listen, open_browser=not args.no_open)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"dyncreds {__version__}")
    return EXIT_OK


def global_flags() -> argparse.ArgumentParser:
    """The flags every command takes, before or after its name. SUPPRESS keeps a
    subcommand's parser from resetting a flag given before it; main() fills in the
    defaults afterwards."""
    common = argparse.ArgumentParser(add_help=False)
    hide = argparse.SUPPRESS
    offer_directories(
        common.add_argument(
            "--config-dir", default=hide, help="configuration directory (DYNCREDS_CONFIG_DIR)"
        )
    )
    offer_directories(
        common.add_argument(
            "--state-dir", default=hide, help="state directory (DYNCREDS_STATE_DIR)"
        )
    )
    offer_files(
        common.add_argument("--socket", default=hide, help="agent socket path (DYNCREDS_SOCKET)")
    )
    common.add_argument("--json", action="store_true", default=hide, help="machine-readable output")
    return common


def named_command(argv: Sequence[str]) -> str | None:
    """The command a command line names, read with the global flags alone (and
    ``--version`` answered here); None when there is none to read (``--help``, a
    bad global flag), and the whole parser then answers."""
    first = argparse.ArgumentParser(
        prog="dyncreds", parents=[global_flags()], add_help=False, exit_on_error=False
    )
    first.add_argument("--version", action="version", version=f"dyncreds {__version__}")
    first.add_argument("command", nargs="?")
    first.add_argument("rest", nargs=argparse.REMAINDER)
    try:
        known, _ = first.parse_known_args(argv)
    except argparse.ArgumentError:
        return None
    command: str | None = known.command
    return command


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: every command's, or only ``command``'s (the others are not built:
    argparse's ~40 parsers were most of the CLI's start-up). An unknown ``command``
    gets the whole parser, whose error lists the commands."""
    common = global_flags()
    parser = argparse.ArgumentParser(
        prog="dyncreds",
        parents=[common],
        description="Short-lived AWS credentials for the programs on this machine.",
    )
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True
    parser.add_argument("--version", action="version", version=f"dyncreds {__version__}")
    cli = Commands(build_parser, sub, common, only=command)
    p = cli.add("agent", cmd_agent, "run the agent in the foreground (systemd runs it this way)")
    p.add_argument("--log-format", choices=["text", "json"], help="log line format")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level")
    for module in MODULES:
        module.add_commands(cli)
    p = cli.add("ui", cmd_ui, "serve the web console on loopback and open it in a browser")
    p.add_argument("--listen", default="127.0.0.1:0", help="127.0.0.1:PORT (default: a free port)")
    p.add_argument("--no-open", action="store_true", help="print the address, open no browser")
    p = cli.add(
        "demo", cmd_demo, "the whole flow, offline, on an embedded AWS stand-in", flags=False
    )
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--console", action="store_true", help="then serve the web console on it until Ctrl-C"
    )
    cli.add("version", cmd_version, "print the version", flags=False)
    if command is not None and not cli.built:
        return build_parser()
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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(named_command(argv))
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
        import signal  # (its enums cost start-up time; only here)

        return EXIT_SIGNAL_BASE + signal.SIGINT
    except BrokenPipeError:
        return EXIT_OK
