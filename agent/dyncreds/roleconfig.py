"""Writing roles/NAME.toml as functions (``role create``/``role edit``/``role
delete`` and the web console call them). Every file is validated with the agent's own loader before
the agent can see it: written to a staging directory the agent does not read,
loaded, and only then renamed into place. A refused role changes nothing."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import tomlkit

from dyncreds import config, paths
from dyncreds.client import EXIT_USAGE, CliError
from dyncreds.config.problems import read_text
from dyncreds.files import atomic_write


class ConfigureError(CliError):
    """A refused role: one line per problem, nothing written (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


# Fields where setting one removes the other (the loader takes one of the two).
EXCLUSIVE = {"policy_document": "policy_file", "policy_file": "policy_document"}


def check_name(name: str) -> None:
    if not config.ROLE_NAME.fullmatch(name):
        raise ConfigureError(f"role name {name!r} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}")


def _no_role(p: paths.Paths, name: str) -> ConfigureError:
    return ConfigureError(f"no role {name!r} in {p.roles_dir}")


def read_role(p: paths.Paths, name: str) -> tuple[dict[str, Any], str]:
    """A role file's fields as written (durations stay "1h") and its text."""
    check_name(name)
    path = p.role_file(name)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise _no_role(p, name) from None
    except (OSError, ValueError) as exc:
        raise ConfigureError(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigureError(f"{path}: invalid TOML: {exc}; fix it by hand") from None


def write_role(p: paths.Paths, name: str, spec: dict[str, Any], *, replace: bool = False) -> Path:
    """Write roles/NAME.toml for ``spec`` (field -> value as TOML takes it). An
    existing file is replaced only with ``replace``; its comments are kept."""
    check_name(name)
    target = p.role_file(name)
    existing = read_text(target) if target.exists() else None
    if existing is not None and not replace:
        raise ConfigureError(f"role {name} exists ({target}); use --force to replace it")
    _install(p, name, config.render_role_toml(spec, existing))
    return target


def edit_role(p: paths.Paths, name: str, changes: dict[str, Any]) -> Path:
    """Change some fields of an existing role (None, [] or {} removes a field);
    everything else, comments included, stays as written."""
    spec, text = read_role(p, name)
    for key, value in changes.items():
        spec[key] = value
        if key in EXCLUSIVE and value not in (None, "", [], {}):
            spec.pop(EXCLUSIVE[key], None)
    _install(p, name, config.render_role_toml(spec, text))
    return p.role_file(name)


def delete_role(p: paths.Paths, name: str, *, missing_ok: bool = False) -> Path:
    """Remove roles/NAME.toml (the agent forgets the role at its next reload); a
    role that is not there is a one-line error unless ``missing_ok``."""
    check_name(name)
    path = p.role_file(name)
    try:
        path.unlink()
    except FileNotFoundError:
        if not missing_ok:
            raise _no_role(p, name) from None
    return path


def _install(p: paths.Paths, name: str, text: str) -> None:
    """Validate ``text`` as the agent would read it, then write it atomically. The
    staged copy sits in a directory the agent does not read, so a policy_file
    relative to the roles dir is made absolute there (same lines, same problems)."""
    target = p.role_file(name)
    staging_dir = p.roles_dir / f".staging-{os.getpid()}"
    staging_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir / f"{name}.toml"
    staging.write_text(_anchored(text, p.roles_dir))
    try:
        main_problems: list[config.Problem] = []
        main = config.load_main(p.config_file, main_problems)
        problems: list[config.Problem] = []
        config.load_role(staging, main.lease if main else config.LeaseDefaults(), problems)
    finally:
        staging.unlink(missing_ok=True)
        staging_dir.rmdir()
    if problems:
        lines = [str(config.Problem(target, x.line, x.message)) for x in problems]
        raise ConfigureError("\n".join(lines) + f"\nnothing was written to {target}")
    atomic_write(target, text, 0o644)


def _anchored(text: str, roles_dir: Path) -> str:
    doc = tomlkit.parse(text)
    ref = doc.get("policy_file")
    if isinstance(ref, str) and not Path(ref).is_absolute():
        doc["policy_file"] = str(roles_dir / ref)
    return tomlkit.dumps(doc)
