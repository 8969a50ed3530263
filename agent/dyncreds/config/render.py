"""Writing role files and config tables back as TOML text (``role create``,
``configure root``)."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from dyncreds.config.schema import RoleFile


def render_role_toml(spec: dict[str, Any]) -> str:
    """A roles/NAME.toml text for ``role create``; keys in the SPEC's order."""
    order = [f.encode_name for f in msgspec.structs.fields(RoleFile)]
    lines = []
    for key in order:
        if key not in spec or spec[key] in (None, [], {}):
            continue
        lines.append(f"{key} = {toml_value(spec[key])}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "\n" in value and "'''" not in value:
            return f"'''\n{value}'''"
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
