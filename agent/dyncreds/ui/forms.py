"""The role form as data (pure): which fields a credential type shows, the form
to a role-file spec and back, and the policy box's JSON check, which names the
line and column of the first error.

The fields come from kinds.py: a new credential type gets its form for free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dyncreds.kinds import Kind

# (key, label, widget, help). Widgets: text, textarea, lines (one per line),
# tags (KEY=VALUE per line), check.
FIELDS: list[tuple[str, str, str, str]] = [
    ("policy_document", "Policy JSON", "textarea", "paste the policy from the AWS console"),
    ("policy_arns", "Managed policy ARNs", "lines", "one ARN per line"),
    ("iam_groups", "IAM groups", "lines", "one group per line"),
    ("role_arns", "Role ARNs", "lines", "the roles to assume, one per line"),
    ("external_id", "External ID", "text", "sts:ExternalId"),
    ("session_name", "Session name", "text", "a template, e.g. dyncreds-{user}-{role}"),
    ("source_identity", "Source identity", "text", "a template, e.g. {user}"),
    ("username", "IAM user", "text", "the existing user whose key is rotated"),
    ("rotation_period", "Rotation period", "text", 'e.g. "24h"'),
    ("user_path", "User path", "text", "IAM path of the users, e.g. /dyncreds/"),
    ("permissions_boundary_arn", "Permissions boundary ARN", "text", ""),
    ("iam_tags", "IAM tags", "tags", "KEY=VALUE, one per line"),
    ("session_tags", "Session tags", "tags", "KEY=VALUE, one per line"),
    ("revoke_sessions", "Revoke sessions", "check", "deny the sessions when revoked"),
]
COMMON: list[tuple[str, str, str, str]] = [
    ("ttl", "TTL", "text", 'lease or session length, e.g. "1h"'),
    ("max_ttl", "Max TTL", "text", 'cap on the lifetime, e.g. "12h"'),
    ("region", "Region", "text", "the region handed to programs"),
    ("prefetch", "Prefetch", "check", "keep a lease warm from start-up"),
]
WIDGETS = {key: widget for key, _, widget, _ in FIELDS + COMMON}

POLICY_TEMPLATES = {
    "EC2 full access": {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
    },
    "S3 read-only": {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*"}],
    },
    "Read-only (describe/list/get)": {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["*:Describe*", "*:List*", "*:Get*"], "Resource": "*"}
        ],
    },
}


def fields_for(kind: Kind) -> list[tuple[str, str, str, str]]:
    """The type's own fields, the ones it needs first (policy_file is for files, not a
    form), then the common ones."""
    needed = {"policy_document" if n == "policy" else n for n in kind.needs_one_of}
    own = [f for f in FIELDS if f[0] in kind.fields]
    return sorted(own, key=lambda f: f[0] not in needed) + COMMON  # what it needs first


@dataclass(frozen=True)
class PolicyError:
    line: int
    column: int
    reason: str

    @property
    def message(self) -> str:
        return f"policy JSON, line {self.line} column {self.column}: {self.reason}"


def check_policy(text: str) -> PolicyError | None:
    """As the loader checks it (valid JSON, an object with a Statement), with the line."""
    if not text.strip():
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return PolicyError(exc.lineno, exc.colno, exc.msg)
    if not isinstance(document, dict) or "Statement" not in document:
        return PolicyError(1, 1, 'the policy must be a JSON object with a "Statement"')
    return None


def values_from_form(data: Any) -> dict[str, Any]:
    """The posted form as the page's values (strings, as typed)."""
    values: dict[str, Any] = {
        "name": str(data.get("name") or "").strip(),
        "credential_type": str(data.get("credential_type") or ""),
    }
    for key, widget in WIDGETS.items():
        raw = data.get(key)
        values[key] = (raw is not None) if widget == "check" else str(raw or "")
    return values


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def spec_from_values(values: dict[str, Any]) -> dict[str, Any]:
    """The role file's fields (checked next by the agent's loader). ValueError
    for a tag line without "="."""
    spec: dict[str, Any] = {"credential_type": values["credential_type"]}
    for key, widget in WIDGETS.items():
        raw = values.get(key)
        if widget == "check":
            if raw:
                spec[key] = True
            continue
        value = str(raw or "")
        if widget == "lines":
            spec[key] = _lines(value)
        elif widget == "tags":
            tags = {}
            for line in _lines(value):
                tag, sep, tag_value = line.partition("=")
                if not sep:
                    raise ValueError(f"{key}: {line!r} is not KEY=VALUE")
                tags[tag.strip()] = tag_value.strip()
            spec[key] = tags
        elif key == "policy_document" and value.strip():
            spec[key] = json.dumps(json.loads(value), indent=2)  # checked first
        elif value.strip():
            spec[key] = value.strip()
    return spec


def keep_unshown(spec: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    """An edit keeps the role file's fields the form does not show (``policy_file``,
    unless a policy was typed in the box: the two exclude each other)."""
    kept = dict(spec)
    for key, value in written.items():
        if key in WIDGETS or key == "credential_type":
            continue
        if key == "policy_file" and spec.get("policy_document"):
            continue
        kept[key] = value
    return kept


def values_from_file(spec: dict[str, Any]) -> dict[str, Any]:
    """A role file (parsed TOML) as the form's values."""
    values: dict[str, Any] = {"credential_type": spec.get("credential_type", "iam_user")}
    for key, widget in WIDGETS.items():
        value = spec.get(key)
        if widget == "check":
            values[key] = bool(value)
        elif widget == "lines":
            values[key] = "\n".join(value or [])
        elif widget == "tags":
            values[key] = "\n".join(f"{k}={v}" for k, v in (value or {}).items())
        else:
            values[key] = "" if value is None else str(value)
    return values
