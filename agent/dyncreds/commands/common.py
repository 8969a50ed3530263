"""What every command shares: paths from the global flags, loading the config,
JSON output, and the error that carries an exit status."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dyncreds import config, paths
from dyncreds.client import EXIT_USAGE, ClientError

CliError = ClientError


def get_paths(args: argparse.Namespace) -> paths.Paths:
    """The CLI's paths: its socket is the first agent that answers (the user's own,
    then the host's system agent), as the shim finds it."""
    return paths.resolve(args.config_dir, args.state_dir, args.socket, discover=True)


def load(args: argparse.Namespace) -> config.Config:
    try:
        return config.load(get_paths(args).config_dir)
    except config.ConfigError as exc:
        raise CliError("\n".join(str(p) for p in exc.problems), EXIT_USAGE) from None


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))
