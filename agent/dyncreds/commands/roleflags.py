"""``role create`` / ``role edit`` flags, derived from the role file's schema
(``config.schema.RoleFile``) so that a new field is a new flag, with nothing to
keep in step by hand: a string or duration field ``foo_bar`` is ``--foo-bar V``, a
list ``foo_bars`` is ``--foo-bar V`` (repeatable), a table ``foo_tags`` is
``--foo-tag KEY=VALUE`` (repeatable), a boolean is ``--foo``/``--no-foo``. The
help says which credential types take the field (``kinds``).

On ``role edit`` an empty value (``--external-id ""``, ``--policy-arn ""``)
removes the field; a list or table flag replaces the whole list or table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from dyncreds.client import EXIT_USAGE, CliError
from dyncreds.config.schema import RoleFile, Seconds
from dyncreds.kinds import KINDS, kind_fields, kinds_taking, names

# Fields whose flag is not the field's own name.
FLAG_NAMES = {
    "credential_type": "--type",
    # --policy-file copies a file's policy in (0.1's flag); this one refers to it.
    "policy_file": "--policy-file-ref",
}
HELP = {
    "credential_type": "the credential type",
    "policy_document": "policy JSON, inline",
    "policy_file": "a policy JSON file the role refers to, relative to the roles dir",
    "policy_arns": "a managed policy ARN (repeatable)",
    "iam_groups": "an IAM group the user joins (repeatable)",
    "iam_tags": "KEY=VALUE, an IAM tag on the user (repeatable)",
    "user_path": "IAM path of the users",
    "permissions_boundary_arn": "permissions boundary of the users",
    "ttl": 'lease or session length, e.g. "1h"',
    "max_ttl": 'cap on the lifetime, e.g. "12h"',
    "role_arns": "a role to assume; the first is the default (repeatable)",
    "external_id": "sts:ExternalId",
    "session_tags": "KEY=VALUE, a session tag (repeatable)",
    "region": "region handed to programs (exec, aws-config)",
    "prefetch": "keep a lease warm from start-up, used or not",
    "session_name": "session name template ({user}, {role}, {host}, {random}, {unix_time})",
    "source_identity": "sts SourceIdentity template",
    "revoke_sessions": "`revoke` also denies sessions issued before it",
    "username": "the existing IAM user whose key the agent rotates",
    "rotation_period": 'how often the key is rotated, e.g. "24h" (at least 15m)',
}


@dataclass(frozen=True)
class FieldFlag:
    field: str
    flag: str
    kind: str  # "choice", "str", "duration", "bool", "list", "dict"

    @property
    def dest(self) -> str:
        return "field_" + self.field


def _kind(info: Any) -> str:
    if isinstance(info, msgspec.inspect.UnionType):  # X | None
        info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    if isinstance(info, msgspec.inspect.LiteralType):
        return "choice"
    if isinstance(info, msgspec.inspect.CustomType) and info.cls is Seconds:
        return "duration"
    kinds = {
        msgspec.inspect.StrType: "str",
        msgspec.inspect.BoolType: "bool",
        msgspec.inspect.ListType: "list",
        msgspec.inspect.DictType: "dict",
    }
    for cls, name in kinds.items():
        if isinstance(info, cls):
            return name
    raise TypeError(f"no flag kind for a role field of type {info}")  # a new type: add it


def role_flags() -> list[FieldFlag]:
    """One flag per field of roles/NAME.toml, in the file's order."""
    info = msgspec.inspect.type_info(RoleFile)
    assert isinstance(info, msgspec.inspect.StructType)
    flags = []
    for f in info.fields:
        kind = _kind(f.type)
        name = f.name.removesuffix("s") if kind in ("list", "dict") else f.name
        flags.append(FieldFlag(f.name, FLAG_NAMES.get(f.name, "--" + name.replace("_", "-")), kind))
    return flags


def _help(field: str) -> str:
    text = HELP.get(field, f"the role file's {field}")
    if field in kind_fields():
        text += f" ({', '.join(sorted(kinds_taking(field)))})"
    return text


def add_role_flags(p: argparse.ArgumentParser, *, edit: bool) -> None:
    for ff in role_flags():
        kwargs: dict[str, Any] = {"dest": ff.dest, "help": _help(ff.field)}
        if ff.kind == "choice":
            kwargs.update(choices=list(names()), required=not edit)
        elif ff.kind == "bool":
            kwargs.update(action=argparse.BooleanOptionalAction, default=None)
        elif ff.kind == "dict":
            kwargs.update(action="append", metavar="KEY=VALUE")
        elif ff.kind == "list":
            kwargs.update(action="append", metavar=ff.flag[2:].upper().replace("-", "_"))
        else:
            kwargs["metavar"] = "DURATION" if ff.kind == "duration" else ff.field.upper()
        p.add_argument(ff.flag, **kwargs)
    p.add_argument(
        "--policy-file",
        dest="policy_copy",
        metavar="FILE",
        help="a policy JSON file (or - for stdin) copied into policy_document",
    )
    p.add_argument(
        "--tag",
        action="append",
        metavar="KEY=VALUE",
        help="an iam_tags or session_tags entry, by the role's type (repeatable)",
    )


def changes_from(args: argparse.Namespace, *, credential_type: str | None) -> dict[str, Any]:
    """The fields the flags set, as TOML takes them; an empty value is None/[]/{}
    (the field removed). Fields whose flag was not given are absent."""
    out: dict[str, Any] = {}
    for ff in role_flags():
        value = getattr(args, ff.dest, None)
        if value is None:
            continue
        if ff.kind == "list":
            out[ff.field] = [v for v in value if v]
        elif ff.kind == "dict":
            out[ff.field] = _pairs(ff.flag, value)
        elif ff.kind in ("str", "duration", "choice"):
            out[ff.field] = value or None
        else:
            out[ff.field] = value
    if out.get("policy_document"):
        out["policy_document"] = _indented(out["policy_document"])
    if args.policy_copy:
        out["policy_document"] = _indented(_read_policy(args.policy_copy))
    if args.tag:
        kind = out.get("credential_type") or credential_type
        row = KINDS.get(kind) if isinstance(kind, str) else None
        iam = row is not None and "iam_tags" in row.fields  # tags on the user it makes
        out["iam_tags" if iam else "session_tags"] = _pairs("--tag", args.tag)
    return out


def _pairs(flag: str, items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        if not item:
            continue  # --iam-tag "": the table removed
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} wants KEY=VALUE, got {item!r}", EXIT_USAGE)
        pairs[key] = value
    return pairs


def _indented(policy: str) -> str:
    try:  # stored indented; the loader compacts and checks it
        return json.dumps(json.loads(policy), indent=2)
    except ValueError as exc:
        raise CliError(f"policy is not valid JSON: {exc}", EXIT_USAGE) from None


def _read_policy(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except OSError as exc:
        raise CliError(f"{source}: {exc.strerror}", EXIT_USAGE) from None
