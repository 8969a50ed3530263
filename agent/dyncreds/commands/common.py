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

from dyncreds.client import EXIT_USAGE, CliError

# Not `from typing import TYPE_CHECKING`: importing typing is a tenth of the CLI's
# start-up, and annotations are strings here (PEP 563), so every module the CLI
# loads at start-up imports typing's names for mypy only, this way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from dyncreds import config, paths

    Command = Callable[[argparse.Namespace], int]


class Commands:
    """Where a command module adds its commands, top-level or in a group
    (``role create``, ``fleet init``): every module has ``add_commands(cli)``.

    With ``only``, only that command is built; ``add`` hands the others' modules a
    stand-in that drops their arguments (``Unbuilt``)."""

    def __init__(
        self,
        whole: Callable[[], argparse.ArgumentParser],
        sub: argparse._SubParsersAction[argparse.ArgumentParser] | None,
        common: argparse.ArgumentParser,
        only: str | None = None,
        built: list[str] | None = None,
    ) -> None:
        self.whole = whole  # builds the whole parser (`completion` generates from it)
        self._sub = sub  # None: a group that is not built
        self._common = common
        self._only = only
        self.built: list[str] = [] if built is None else built  # the commands built

    def _builds(self, name: str) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
        """Where ``name``'s parser goes, or None: it is not built on this run."""
        return None if self._only not in (None, name) else self._sub

    def add(
        self, name: str, fn: Command, help_text: str, *, flags: bool = True
    ) -> argparse.ArgumentParser:
        """A command that runs ``fn``. ``flags=False``: the global flags mean nothing
        to it (demo, version ...)."""
        sub = self._builds(name)
        if sub is None:
            return Unbuilt()  # type: ignore[return-value]  # it takes what a parser takes
        parents = [self._common] if flags else []
        p = sub.add_parser(name, parents=parents, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        self.built.append(name)
        return p

    def group(self, name: str, help_text: str, metavar: str) -> Commands:
        """A command made of commands: ``dyncreds NAME METAVAR ...``."""
        sub = self._builds(name)
        if sub is None:
            return Commands(self.whole, None, self._common, built=self.built)
        p = sub.add_parser(name, parents=[self._common], help=help_text, description=help_text)
        inner = p.add_subparsers(dest=f"{name}_command", metavar=metavar)
        inner.required = True
        self.built.append(name)
        return Commands(self.whole, inner, self._common, built=self.built)


class Unbuilt:
    """Stands in for the parser of a command the command line does not name: what
    its module adds to it is dropped, unbuilt."""

    def add_argument(self, *_args: Any, **_kwargs: Any) -> argparse.Action:
        return argparse.Action([], "unbuilt")

    def set_defaults(self, **_kwargs: Any) -> None:
        return None

    def add_mutually_exclusive_group(self, **_kwargs: Any) -> Unbuilt:
        return self

    def add_argument_group(self, *_args: Any, **_kwargs: Any) -> Unbuilt:
        return self


def built(p: argparse.ArgumentParser) -> bool:
    """Whether this run builds the command's parser (or hands its module ``Unbuilt``):
    for arguments that cost something to work out."""
    return not isinstance(p, Unbuilt)


def get_paths(args: argparse.Namespace) -> paths.Paths:
    """The CLI's paths: its socket is the first agent that answers (the user's own,
    then the host's system agent), as the shim finds it."""
    from dyncreds import paths

    return paths.resolve(args.config_dir, args.state_dir, args.socket, discover=True)


def get_socket(args: argparse.Namespace) -> str:
    """``get_paths(args).socket`` alone, as text: for a command that needs no other
    path (``status``), without building the others (pathlib costs start-up time)."""
    from dyncreds import paths

    return paths.client_socket(args.socket)


def load(args: argparse.Namespace) -> config.Config:
    from dyncreds import config

    try:
        return config.load(get_paths(args).config_dir)
    except config.ConfigError as exc:
        raise CliError("\n".join(str(p) for p in exc.problems), EXIT_USAGE) from None


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))
