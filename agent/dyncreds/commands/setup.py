"""Setting dyncreds up on a machine: the systemd user units (``--system``: the system
units, their sysusers.d entry and the IMDS nftables rule), which ship inside the
package (``dyncreds/share/``) so that an installed dyncreds needs no checkout.
(The shell completions are generated: commands/completion.py.)"""

from __future__ import annotations

import argparse
import os
import sys

from dyncreds.client import EXIT_OK, EXIT_USAGE, CliError
from dyncreds.commands.common import Commands
from dyncreds.commands.completion import offer_directories

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from pathlib import Path

UNITS = ("dyncreds-agent.service", "dyncreds-agent.socket")


def shared(*parts: str) -> str:
    from importlib import resources

    return (resources.files("dyncreds") / "share").joinpath(*parts).read_text(encoding="utf-8")


def dyncreds_program() -> str:
    """The absolute command that runs this dyncreds (the venv's, pipx's or PATH's)."""
    import shutil
    from pathlib import Path  # (pathlib: a tenth of the CLI's start-up; only when needed)

    beside = Path(sys.executable).parent / "dyncreds"
    if beside.exists():
        return str(beside)
    found = shutil.which("dyncreds")
    if found:
        return str(Path(found).absolute())
    return f"{sys.executable} -m dyncreds"


def render_service(program: str, system: bool = False) -> str:
    lines = []
    source = ("systemd", "system", UNITS[0]) if system else ("systemd", UNITS[0])
    for line in shared(*source).splitlines():
        if line.startswith("ExecStart="):
            where = " --config-dir /etc/dyncreds" if system else ""
            line = f"ExecStart={program}{where} agent"
        lines.append(line)
    return "\n".join(lines) + "\n"


# System mode: what goes where (``--dir`` puts every file there instead).
SYSTEM_FILES = {
    "/etc/systemd/system/dyncreds-agent.service": None,  # rendered
    "/etc/systemd/system/dyncreds-agent.socket": ("systemd", "system", UNITS[1]),
    "/etc/sysusers.d/dyncreds.conf": ("systemd", "system", "dyncreds.sysusers"),
    "/etc/nftables.d/dyncreds-imds.nft": ("nftables", "dyncreds-imds.nft"),
}
SYSTEM_NEXT = """next, as root:
  systemd-sysusers /etc/sysusers.d/dyncreds.conf      # the service user `dyncreds`
  install -d -o dyncreds -g dyncreds -m 0700 /etc/dyncreds
  # /etc/dyncreds/config.toml: [agent] mode = "system", [root], [[access]] rules
  systemctl daemon-reload && systemctl enable --now dyncreds-agent.socket
  nft -f /etc/nftables.d/dyncreds-imds.nft   # if the root is this instance's role"""


def install_system_units(target: Path | None) -> int:
    """The system units, the sysusers.d entry and the IMDS rule; written all or none
    (each atomically, the directories checked first)."""
    from pathlib import Path

    from dyncreds.files import atomic_write

    files: dict[Path, str] = {}
    for where, source in SYSTEM_FILES.items():
        path = Path(where) if target is None else target / Path(where).name
        text = render_service(dyncreds_program(), True) if source is None else shared(*source)
        files[path] = text
    try:
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(path.parent, os.W_OK):
                raise PermissionError(13, "Permission denied (run as root)", str(path.parent))
        for path, text in files.items():
            atomic_write(path, text, 0o644)
    except OSError as exc:
        raise CliError(
            f"cannot write {exc.filename or 'the units'}: {exc.strerror or exc}", EXIT_USAGE
        ) from None
    for path in files:
        print(f"wrote {path}")
    print(SYSTEM_NEXT)
    return EXIT_OK


def cmd_install_units(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dyncreds.files import atomic_write

    if args.system:
        return install_system_units(Path(args.dir) if args.dir else None)
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
    default = Path(config_home) / "systemd" / "user"
    where = "" if target.resolve() == default.resolve() else f"copy them to {default}, then "
    print(
        f"next: {where}systemctl --user daemon-reload && "
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
    p.add_argument(
        "--system",
        action="store_true",
        help="system mode: the system units (service user `dyncreds`) to /etc/systemd/system, "
        "its sysusers.d entry and the IMDS nftables rule",
    )
