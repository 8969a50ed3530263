"""Configuration: config.toml and roles/NAME.toml. Pure (reads files, nothing else).

``schema`` is the shape of the files, ``problems`` reads TOML and reports what is
wrong as ``file:line: message``, ``main`` and ``roles`` hold the checks, ``render``
writes files back. ``load`` is the one entry point the agent and the CLI use.
"""

from __future__ import annotations

import os
from pathlib import Path

from dyncreds.config.main import check_username_template, load_main, main_from_text
from dyncreds.config.problems import ConfigError, Problem
from dyncreds.config.render import render_role_toml
from dyncreds.config.roles import load_role
from dyncreds.config.schema import (
    ACCESS_OPS,
    ROLE_NAME,
    AccessRule,
    AgentSettings,
    Config,
    FleetSettings,
    LeaseDefaults,
    MainConfig,
    Role,
    RoleFile,
    RootSettings,
    Seconds,
    format_duration,
    parse_duration,
)

__all__ = [
    "ACCESS_OPS",
    "ROLE_NAME",
    "AccessRule",
    "AgentSettings",
    "Config",
    "ConfigError",
    "FleetSettings",
    "LeaseDefaults",
    "MainConfig",
    "Problem",
    "Role",
    "RoleFile",
    "RootSettings",
    "Seconds",
    "check_username_template",
    "format_duration",
    "load",
    "load_main",
    "load_role",
    "main_from_text",
    "parse_duration",
    "render_role_toml",
]


def role_files(roles_dir: Path, problems: list[Problem]) -> list[Path]:
    """Every roles/*.toml. A missing roles dir means no roles; one that cannot be
    read is a problem (never "zero roles", which would drop every role on reload)."""
    try:
        with os.scandir(roles_dir) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(".toml"))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        problems.append(Problem(roles_dir, None, "is not a directory"))
        return []
    except OSError as exc:
        problems.append(
            Problem(
                roles_dir,
                None,
                f"cannot read the roles directory: {exc.strerror or exc}; fix its permissions",
            )
        )
        return []
    return [roles_dir / name for name in names if not name.startswith(".")]


def load(config_dir: Path) -> Config:
    """config.toml plus every roles/*.toml; raises ConfigError listing all problems."""
    problems: list[Problem] = []
    main = load_main(config_dir / "config.toml", problems)
    defaults = main.lease if main else LeaseDefaults()
    roles: dict[str, Role] = {}
    for path in role_files(config_dir / "roles", problems):
        role = load_role(path, defaults, problems)
        if role is not None:
            roles[role.name] = role
    if problems or main is None:
        raise ConfigError(problems)
    return Config(main=main, roles=roles, base_dir=config_dir)
