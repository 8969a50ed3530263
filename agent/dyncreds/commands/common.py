"""What every command shares: the one way a command module adds its commands
(``Commands``), paths from the global flags, loading the config, JSON output, and
the error that carries an exit status (``CliError``, defined beside the exit codes
in client.py).

Start-up rule (import-linter's CLI contract, and tests/test_cli_startup.py): a
command module imports at its top only what building the parser needs; whatever a
command needs to run (config, tomlkit, trio, boto3 ...) is imported inside it, so
that ``dyncreds --version`` and ``dyncreds status`` load none of it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from dyncreds.client import EXIT_USAGE
from dyncreds.client import CliError as CliError

if TYPE_CHECKING:
    from dyncreds import config, paths

Command = Callable[[argparse.Namespace], int]


class Commands:
    """Where a command module adds its commands, top-level or in a group
    (``role create``, ``fleet init``): every module has ``add_commands(cli)``."""

    def __init__(
        self,
        root: argparse.ArgumentParser,
        sub: argparse._SubParsersAction[argparse.ArgumentParser],
        common: argparse.ArgumentParser,
    ) -> None:
        self.root = root  # the whole parser (`completion` generates from it)
        self._sub = sub
        self._common = common

    def add(
        self, name: str, fn: Command, help_text: str, *, flags: bool = True
    ) -> argparse.ArgumentParser:
        """A command that runs ``fn``. ``flags=False``: the global flags mean nothing
        to it (demo, version ...)."""
        parents = [self._common] if flags else []
        p = self._sub.add_parser(name, parents=parents, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    def group(self, name: str, help_text: str, metavar: str) -> Commands:
        """A command made of commands: ``dyncreds NAME METAVAR ...``."""
        p = self._sub.add_parser(
            name, parents=[self._common], help=help_text, description=help_text
        )
        sub = p.add_subparsers(dest=f"{name}_command", metavar=metavar)
        sub.required = True
        return Commands(self.root, sub, self._common)


class CredentialTypes(Collection[str]):
    """``--type``'s choices, from kinds.py when argparse first asks (a ``role
    create``, its help, a completion script): kinds' dataclasses would cost every
    other command's start-up a fifth of its time. Give the argument a ``metavar``,
    or argparse asks at once (to check the metavar)."""

    @staticmethod
    def _names() -> tuple[str, ...]:
        from dyncreds.kinds import CREDENTIAL_TYPES

        return CREDENTIAL_TYPES

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __len__(self) -> int:
        return len(self._names())


def get_paths(args: argparse.Namespace) -> paths.Paths:
    from dyncreds import paths

    return paths.resolve(args.config_dir, args.state_dir, args.socket)


def load(args: argparse.Namespace) -> config.Config:
    from dyncreds import config

    try:
        return config.load(get_paths(args).config_dir)
    except config.ConfigError as exc:
        raise CliError("\n".join(str(p) for p in exc.problems), EXIT_USAGE) from None


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))
