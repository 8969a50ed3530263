"""The console's one seam to the configuration writers the CLI uses: roles and the
root are written exactly as ``role create``/``role edit`` and ``configure root``
write them (roleconfig, rootconfig: validated first, comments kept, nothing written
on a refusal), roles listed as ``role list`` does, and the sign-in URL made as
``login`` makes it. Refusals come back as lines to show."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from dyncreds import paths, roleconfig, rootconfig
from dyncreds.aws.rootkeys import StaticKeys
from dyncreds.commands.login import console_url
from dyncreds.commands.roles import reload_agent, role_rows

__all__ = ["console_url", "delete_role", "reload_agent", "role_rows", "save_role", "save_root"]

# configure root's settings that the console's form shows.
SETTINGS = ("region", "iam_endpoint", "sts_endpoint", "mfa_serial", "unlock_for", "rotate_every")


def save_role(p: paths.Paths, name: str, spec: dict[str, Any], *, replace: bool) -> list[str]:
    """roles/NAME.toml from ``spec`` if the agent's loader takes it; else its problems."""
    try:
        roleconfig.write_role(p, name, spec, replace=replace)
    except roleconfig.ConfigureError as exc:
        return str(exc).splitlines()
    return []


def delete_role(p: paths.Paths, name: str) -> None:
    """roles/NAME.toml removed (already gone is fine: two tabs may both delete)."""
    roleconfig.delete_role(p, name, missing_ok=True)


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
    """``configure root`` with these values, checked with AWS first. No key with a
    static store moves the current key there (or only changes settings); a setting
    given as "" is removed, None is left alone."""
    target: Literal["file", "keyring"] | None = None
    if profile is None:
        target = "keyring" if store == "keyring" else "file"
    change = rootconfig.RootChange(
        profile=profile,
        new_key=keys,
        store=target,
        keyring_item=keyring_item,
        settings=settings,
    )
    try:
        rootconfig.configure_root(p, change, say)
    except rootconfig.ConfigureError as exc:
        return str(exc).splitlines()
    return []
