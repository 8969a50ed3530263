"""Setting dyncreds up on a machine: the systemd user units and the shell
completions, which ship inside the package (``dyncreds/share/``) so that an
installed dyncreds needs no checkout."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from dyncreds.client import EXIT_OK, EXIT_USAGE
from dyncreds.commands.common import CliError
from dyncreds.files import atomic_write

UNITS = ("dyncreds-agent.service", "dyncreds-agent.socket")
COMPLETIONS = {"bash": "dyncreds.bash", "zsh": "_dyncreds", "fish": "dyncreds.fish"}
COMPLETION_HOMES = {
    "bash": "~/.local/share/bash-completion/completions/dyncreds",
    "zsh": "a directory on $fpath, e.g. ~/.zfunc/_dyncreds (then `autoload -U compinit; compinit`)",
    "fish": "~/.config/fish/completions/dyncreds.fish",
}


def shared(*parts: str) -> str:
    return (resources.files("dyncreds") / "share").joinpath(*parts).read_text(encoding="utf-8")


def dyncreds_program() -> str:
    """The absolute command that runs this dyncreds (the venv's, pipx's or PATH's)."""
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


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(shared("completions", COMPLETIONS[args.shell]))
    if sys.stdout.isatty():
        print(f"# save this as {COMPLETION_HOMES[args.shell]}", file=sys.stderr)
    return EXIT_OK


def add_commands(add: Any) -> None:
    p = add(
        "install-units",
        cmd_install_units,
        "write the systemd user units (ExecStart= this dyncreds) to ~/.config/systemd/user",
    )
    p.add_argument("--dir", help="write them here instead")
    p = add("completion", cmd_completion, "print the shell completion script")
    p.add_argument("shell", choices=sorted(COMPLETIONS), help="bash, zsh or fish")
