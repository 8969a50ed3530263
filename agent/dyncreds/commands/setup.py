"""Setting dyncreds up on a machine: the systemd user units, which ship inside
the package (``dyncreds/share/``) so that an installed dyncreds needs no checkout.
(The shell completions are generated: commands/completion.py.)"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dyncreds.client import EXIT_OK, EXIT_USAGE
from dyncreds.commands.common import CliError, Commands
from dyncreds.commands.completion import offer_directories

UNITS = ("dyncreds-agent.service", "dyncreds-agent.socket")


def shared(*parts: str) -> str:
    from importlib import resources

    return (resources.files("dyncreds") / "share").joinpath(*parts).read_text(encoding="utf-8")


def dyncreds_program() -> str:
    """The absolute command that runs this dyncreds (the venv's, pipx's or PATH's)."""
    import shutil

    beside = Path(sys.executable).parent / "dyncreds"
    if beside.exists():
        return str(beside)
    found = shutil.which("dyncreds")
    if found:
        return str(Path(found).absolute())
    return f"{sys.executable} -m dyncreds"


def render_service(program: str) -> str:
    lines = []
    for line in shared("systemd", UNITS[0]).splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={program} agent"
        lines.append(line)
    return "\n".join(lines) + "\n"


def cmd_install_units(args: argparse.Namespace) -> int:
    from dyncreds.files import atomic_write

    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    target = Path(args.dir or Path(config_home) / "systemd" / "user")
    try:
        target.mkdir(parents=True, exist_ok=True)
        atomic_write(target / UNITS[0], render_service(dyncreds_program()), 0o644)
        atomic_write(target / UNITS[1], shared("systemd", UNITS[1]), 0o644)
    except OSError as exc:
        raise CliError(
            f"cannot write the units to {target}: {exc.strerror or exc}", EXIT_USAGE
        ) from None
    for name in UNITS:
        print(f"wrote {target / name}")
    print(
        "next: systemctl --user daemon-reload && "
        "systemctl --user enable --now dyncreds-agent.socket"
    )
    return EXIT_OK


def add_commands(cli: Commands) -> None:
    p = cli.add(
        "install-units",
        cmd_install_units,
        "write the systemd user units (ExecStart= this dyncreds) to ~/.config/systemd/user",
    )
    offer_directories(p.add_argument("--dir", help="write them here instead"))
