"""Writing role files back as TOML text (``role create``) with tomlkit, which
keeps a file's comments and layout when it is edited."""

from __future__ import annotations

from typing import Any

import msgspec
import tomlkit

from dyncreds.config.schema import RoleFile

ROLE_KEYS = [f.encode_name for f in msgspec.structs.fields(RoleFile)]


def render_role_toml(spec: dict[str, Any], existing: str | None = None) -> str:
    """roles/NAME.toml for ``spec``, keys in the SPEC's order. ``existing`` (the
    file being replaced) keeps its comments; its other role keys are dropped."""
    doc = tomlkit.parse(existing) if existing else tomlkit.document()
    for key in ROLE_KEYS:
        value = spec.get(key)
        if value in (None, [], {}):
            doc.pop(key, None)
        elif key == "policy_document" and "\n" in value:
            doc[key] = tomlkit.string(value, multiline=True, literal="'''" not in value)
        elif isinstance(value, dict):  # inline, as the SPEC writes them
            table = tomlkit.inline_table()
            table.update(value)
            doc[key] = table
        else:
            doc[key] = value
    return tomlkit.dumps(doc)
