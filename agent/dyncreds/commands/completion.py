"""``dyncreds completion bash|zsh|fish``: the shell's completion script, generated
from the parser by shtab, so that it offers exactly the commands and flags that
exist - including flags added tomorrow.

What argparse cannot know is marked on the argument where it is defined:
``offer_roles(action)`` (Tab offers the configured roles, read offline by
``dyncreds completion --list roles``), ``offer_leases(action)`` (the agent's leases,
``--list leases``; nothing when it is not running), ``offer_files``/``offer_directories``.
"""

from __future__ import annotations

import argparse
import sys

from dyncreds.client import EXIT_OK, EXIT_USAGE, CliError
from dyncreds.commands.common import Commands, get_paths

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from typing import Any

SHELLS = ("bash", "zsh", "fish")
SAVE_AS = {
    "bash": "~/.local/share/bash-completion/completions/dyncreds",
    "zsh": "a directory on $fpath, e.g. ~/.zfunc/_dyncreds (then `autoload -U compinit; compinit`)",
    "fish": "~/.config/fish/completions/dyncreds.fish",
}


def _words(kind: str) -> dict[str, Any]:
    """A shtab completer that runs ``dyncreds completion --list KIND`` at each Tab
    (errors silenced: a completion never prints one)."""
    run = f"command dyncreds completion --list {kind} 2>/dev/null"
    bash_fn, zsh_fn, fish_fn = f"_dyncreds_{kind}", f"_dyncreds_{kind}_zsh", f"__dyncreds_{kind}"
    return {
        "bash": bash_fn,
        "zsh": zsh_fn,
        "fish": f"({fish_fn})",
        "preamble": {
            # bash: called with the word being completed, prints the matches.
            "bash": f'{bash_fn}() {{\n  compgen -W "$({run})" -- "$1"\n}}\n',
            "zsh": f'{zsh_fn}() {{\n  local -a found\n  found=(${{(f)"$({run})"}})\n'
            "  compadd -a found\n}\n",
            "fish": f"function {fish_fn}\n    {run}\nend\n",
        },
    }


ROLES = _words("roles")
LEASES = _words("leases")


def offer_roles(action: argparse.Action) -> argparse.Action:
    """Tab on this argument offers the configured roles."""
    setattr(action, "complete", ROLES)  # noqa: B010 - shtab reads this attribute
    return action


def offer_leases(action: argparse.Action) -> argparse.Action:
    """Tab on this argument offers the running agent's lease ids."""
    setattr(action, "complete", LEASES)  # noqa: B010
    return action


def offer_files(action: argparse.Action) -> argparse.Action:
    setattr(action, "complete", "file")  # noqa: B010 - shtab's own file completion
    return action


def offer_directories(action: argparse.Action) -> argparse.Action:
    setattr(action, "complete", "directory")  # noqa: B010
    return action


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell``, from the whole parser."""
    import shtab

    text: str = shtab.complete(parser, shell=shell)
    if shell == "bash":  # the shim takes a role name too
        text += '\n_dyncreds_shim() {\n  COMPREPLY=($(_dyncreds_roles "$2"))\n}\n'
        text += "complete -F _dyncreds_shim dyncreds-shim\n"
    return text


def configured_roles(args: argparse.Namespace) -> list[str]:
    """The roles of the config directory, as ``dyncreds roles`` lists them (offline)."""
    from dyncreds import config

    return [path.stem for path in config.role_files(get_paths(args).roles_dir, [])]


def agent_leases(args: argparse.Namespace) -> list[str]:
    """The running agent's leases, current and retiring; none when it is not running."""
    from dyncreds.client import Client

    try:
        with Client(get_paths(args).socket, timeout=2) as client:
            status = client.request("status")
    except CliError:
        return []
    ids = [role["lease_id"] for role in status.get("roles", []) if role.get("lease_id")]
    return ids + [item["lease_id"] for item in status.get("retiring", [])]


def cmd_completion(args: argparse.Namespace) -> int:
    if args.list:
        words = configured_roles(args) if args.list == "roles" else agent_leases(args)
        print("\n".join(words))
        return EXIT_OK
    if args.shell is None:
        raise CliError("completion needs a shell: bash, zsh or fish", EXIT_USAGE)
    sys.stdout.write(script(args.whole_parser(), args.shell))  # this run built one command
    if sys.stdout.isatty():
        print(f"# save this as {SAVE_AS[args.shell]}", file=sys.stderr)
    return EXIT_OK


def add_commands(cli: Commands) -> None:
    p = cli.add("completion", cmd_completion, "print the shell completion script")
    p.add_argument("shell", nargs="?", choices=SHELLS, help="bash, zsh or fish")
    # What the scripts run at each Tab; not for people.
    p.add_argument("--list", choices=["roles", "leases"], help=argparse.SUPPRESS)
    p.set_defaults(whole_parser=cli.whole)
