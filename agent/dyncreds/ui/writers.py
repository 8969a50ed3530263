"""The console's one seam to the CLI's own configuration code: it writes roles and
the root exactly as ``role create`` and ``configure root`` do (validated first,
comments kept, nothing written on a refusal), lists roles as ``role list`` does,
and signs in as ``login`` does. Refusals raise ClientError (one line to show);
problems come back as lines."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from dyncreds import paths
from dyncreds.aws.rootkeys import StaticKeys
from dyncreds.commands.login import console_url
from dyncreds.commands.roles import reload_agent, role_rows, write_role
from dyncreds.commands.root import apply_root

__all__ = ["console_url", "reload_agent", "role_rows", "save_role", "save_root"]

# configure root's settings, as its flags name them.
SETTINGS = ("region", "iam_endpoint", "sts_endpoint", "mfa_serial", "unlock_for", "rotate_every")


def save_role(p: paths.Paths, name: str, spec: dict[str, Any], *, replace: bool) -> list[str]:
    """roles/NAME.toml from ``spec`` if the agent's loader takes it; else its problems."""
    return [str(x) for x in write_role(p, name, lambda: spec, force=replace)]


def save_root(
    p: paths.Paths,
    *,
    settings: dict[str, str | None],
    keys: StaticKeys | None,
    profile: str | None,
    store: str,
    keyring_item: str,
    say: Callable[[str], None],
) -> list[str]:
    """``configure root`` with these values (a key, or a profile), checked with AWS first."""
    args = argparse.Namespace(
        profile=profile,
        store="keyring" if store == "keyring" else "file",
        keyring_item=keyring_item,
        no_check=False,
        **{key: settings.get(key) for key in SETTINGS},
    )
    problems = apply_root(p, None, keys, args, say)
    return [str(x) for x in problems] + (["nothing was written"] if problems else [])
