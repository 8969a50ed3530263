"""roles/NAME.toml: decoding and the checks, Vault's per credential type (read
from ``kinds``) plus the limits AWS enforces that are knowable without calling
it (policy size, name lengths, TTL bounds), so that a typo is reported by
``check`` or ``reload`` instead of by a failed issuance."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec

from dyncreds.config.main import REGION, check_template
from dyncreds.config.problems import Problem, decode_table, line_of, printable_path, read_toml
from dyncreds.config.schema import ROLE_NAME, LeaseDefaults, Role, RoleFile, format_duration
from dyncreds.kinds import KINDS, Kind, kind_fields, kinds_taking, names

# AWS limits that can be checked offline.
INLINE_POLICY_MAX = 2048  # user inline policies and session policies, whitespace excluded
USER_GROUPS_MAX = 10
TAGS_MAX = 50
RESERVED_TAGS = 4  # dyncreds:agent, :lease, :role, :expires
TAG_KEY_MAX, TAG_VALUE_MAX = 128, 256
USER_PATH_MAX = 512
EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
POLICY_ARN = re.compile(r"arn:aws[a-z-]*:iam::(aws|\d{12}):policy/[\w+=,.@/-]{1,1024}", re.ASCII)
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}", re.ASCII)
GROUP_NAME = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
USER_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
USER_PATH = re.compile(r"/([\x21-\x7e]*/)?")

Bad = Callable[[str, str], None]


def load_role(path: Path, defaults: LeaseDefaults, problems: list[Problem]) -> Role | None:
    name = path.stem
    before = len(problems)
    if not ROLE_NAME.fullmatch(name):
        shown = printable_path(Path(name))
        problems.append(
            Problem(path, None, f"role name {shown!r} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}")
        )
        return None
    read = read_toml(path, problems)
    if read is None:
        return None
    raw, text = read
    decoded = _decode(raw, path, text, problems)
    if decoded is None:
        return None
    spec, options = decoded
    types = ", ".join(names())
    if spec.credential_type is None:
        problems.append(Problem(path, None, f"credential_type is required (one of {types})"))
        return None
    if spec.credential_type not in KINDS:
        where = line_of(text, None, "credential_type")
        problems.append(
            Problem(path, where, f"credential_type: {spec.credential_type!r} is not one of {types}")
        )
        return None
    kind = KINDS[spec.credential_type]

    def bad(key: str, message: str) -> None:
        problems.append(Problem(path, line_of(text, None, key), f"{key}: {message}"))

    policy = _role_policy(spec, path, bad)
    _check_fields_for_kind(kind, raw, bad)
    if not _grants_something(kind, spec, policy):
        problems.append(Problem(path, None, kind.needs))
    _check_names(kind, spec, bad)
    ttl, max_ttl = _role_ttls(kind, spec, defaults, bad)
    if len(problems) > before:
        return None
    return replace(_role(name, kind, spec, policy, ttl, max_ttl, path), options=options)


def _decode(
    raw: dict[str, Any], path: Path, text: str, problems: list[Problem]
) -> tuple[RoleFile, msgspec.Struct | None] | None:
    """The keys every kind shares, as a ``RoleFile``; a kind's own keys (its
    ``Kind.options``, declared in its module), as that Struct - each bad key reported."""
    named = raw.get("credential_type")
    own = KINDS[named].options if isinstance(named, str) and named in KINDS else None
    own_keys = {f.encode_name for f in msgspec.structs.fields(own)} if own else set()
    shared = {key: value for key, value in raw.items() if key not in own_keys}
    spec = decode_table(shared, RoleFile, path, text, None, problems, past_unknown_keys=True)
    if own is None:
        return None if spec is None else (spec, None)
    mine = {key: value for key, value in raw.items() if key in own_keys}
    options = decode_table(mine, own, path, text, None, problems)
    return None if spec is None or options is None else (spec, options)


def _grants_something(kind: Kind, spec: RoleFile, policy: str | None) -> bool:
    """True unless the kind needs one of several grant fields and the file has none
    ("policy": policy_document or policy_file, read already)."""

    def present(field: str) -> bool:
        return policy is not None if field == "policy" else bool(getattr(spec, field))

    return not kind.needs_one_of or any(present(field) for field in kind.needs_one_of)


def _role(
    name: str,
    kind: Kind,
    spec: RoleFile,
    policy: str | None,
    ttl: int,
    max_ttl: int,
    path: Path,
) -> Role:
    """The checked role file as the immutable Role the rest of the agent reads."""
    return Role(
        name=name,
        credential_type=kind.name,
        policy_document=policy,
        policy_arns=tuple(spec.policy_arns),
        iam_groups=tuple(spec.iam_groups),
        iam_tags=tuple(sorted(spec.iam_tags.items())),
        user_path=spec.user_path or "/",
        permissions_boundary_arn=spec.permissions_boundary_arn,
        ttl=ttl,
        max_ttl=max_ttl,
        role_arns=tuple(spec.role_arns),
        external_id=spec.external_id,
        session_tags=tuple(sorted(spec.session_tags.items())),
        region=spec.region,
        prefetch=spec.prefetch,
        session_name=spec.session_name,
        source_identity=spec.source_identity,
        revoke_sessions=spec.revoke_sessions,
        username=spec.username,
        source=path,
    )


def _check_fields_for_kind(kind: Kind, raw: dict[str, Any], bad: Bad) -> None:
    """Which fields each type takes (Vault's checks), from the kinds table."""
    for key in sorted(kind_fields()):
        if key not in kind.fields and raw.get(key) not in (None, [], {}):
            allowed = " and ".join(sorted(kinds_taking(key)))
            bad(key, f"not allowed for credential_type {kind.name} (only {allowed})")


def _check_names(kind: Kind, spec: RoleFile, bad: Bad) -> None:
    """ARNs, group names, tags, paths and ids: AWS's syntax and counts."""
    _check_arns(kind, spec, bad)
    for group in spec.iam_groups:
        if not GROUP_NAME.fullmatch(group):
            bad("iam_groups", f"{group!r} is not a valid IAM group name")
    if len(spec.iam_groups) > USER_GROUPS_MAX:
        bad("iam_groups", f"a user can be in at most {USER_GROUPS_MAX} groups")
    _check_tags("iam_tags", spec.iam_tags, TAGS_MAX - RESERVED_TAGS, bad)
    _check_tags("session_tags", spec.session_tags, TAGS_MAX, bad)
    if spec.user_path is not None and (
        not USER_PATH.fullmatch(spec.user_path) or len(spec.user_path) > USER_PATH_MAX
    ):
        bad("user_path", "must start and end with / and be at most 512 printable characters")
    if spec.external_id is not None and not EXTERNAL_ID.fullmatch(spec.external_id):
        bad("external_id", "must be 2-1224 characters of letters, digits and +=,.@:/-")
    if spec.region is not None and not REGION.fullmatch(spec.region):
        bad("region", f"{spec.region!r} is not an AWS region name")
    for key in ("session_name", "source_identity"):
        template = getattr(spec, key)
        if template is not None and (problem := check_template(template)):
            bad(key, problem)
    for tag_key, value in spec.session_tags.items():
        if problem := check_template(value):
            bad("session_tags", f"tag {tag_key[:40]!r}: {problem}")


def _check_arns(kind: Kind, spec: RoleFile, bad: Bad) -> None:
    """ARNs and the IAM user name: AWS's syntax and counts."""
    user = spec.username
    if "username" in kind.fields and user is not None and not USER_NAME.fullmatch(user):
        bad("username", f"{user!r} is not an IAM user name")
    for arn in spec.policy_arns:
        if not POLICY_ARN.fullmatch(arn):
            bad("policy_arns", f"{arn!r} is not an IAM policy ARN")
    if len(spec.policy_arns) > kind.policy_arns_max:
        bad(
            "policy_arns",
            f"at most {kind.policy_arns_max} for {kind.name}, got {len(spec.policy_arns)}",
        )
    for arn in spec.role_arns:
        if not ROLE_ARN.fullmatch(arn):
            bad("role_arns", f"{arn!r} is not an IAM role ARN")
    boundary = spec.permissions_boundary_arn
    if boundary is not None and not POLICY_ARN.fullmatch(boundary):
        bad("permissions_boundary_arn", f"{boundary!r} is not a policy ARN")


def _role_policy(spec: RoleFile, path: Path, bad: Bad) -> str | None:
    """The role's policy as compact JSON, from policy_document or policy_file."""
    if spec.policy_document is not None and spec.policy_file is not None:
        bad("policy_file", "set policy_document or policy_file, not both")
        return None
    key, text = "policy_document", spec.policy_document
    if spec.policy_file is not None:
        key = "policy_file"
        policy_path = path.parent / spec.policy_file
        try:
            text = policy_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else exc
            bad(key, f"cannot read {policy_path}: {reason}")
            return None
    if text is None:
        return None
    try:
        document = json.loads(text)
    except ValueError as exc:
        bad(key, f"policy is not valid JSON: {exc}")
        return None
    if not isinstance(document, dict) or "Statement" not in document:
        bad(key, 'policy must be a JSON object with a "Statement"')
        return None
    compact = json.dumps(document, separators=(",", ":"), sort_keys=False)
    if len(compact) > INLINE_POLICY_MAX:
        bad(
            key,
            f"policy is {len(compact)} characters without whitespace; AWS allows "
            f"{INLINE_POLICY_MAX} for inline and session policies",
        )
        return None
    return compact


def _check_tags(key: str, tags: dict[str, str], limit: int, bad: Bad) -> None:
    if len(tags) > limit:
        bad(key, f"at most {limit} tags, got {len(tags)}")
    for tag_key, value in tags.items():
        if not 1 <= len(tag_key) <= TAG_KEY_MAX or len(value) > TAG_VALUE_MAX:
            bad(key, f"tag {tag_key[:40]!r}: keys are 1-128 characters, values at most 256")
        if tag_key.lower().startswith(("aws:", "dyncreds:")):
            bad(key, f"tag {tag_key[:40]!r}: the aws: and dyncreds: prefixes are reserved")


def _role_ttls(kind: Kind, spec: RoleFile, defaults: LeaseDefaults, bad: Bad) -> tuple[int, int]:
    if kind.period_field is not None:  # a rotation period is the lease's life
        key = kind.period_field
        given = getattr(spec, key)
        period = int(given if given is not None else kind.period_default)
        if period < kind.min_ttl:
            bad(key, f"must be at least {format_duration(kind.min_ttl)}")
        if spec.ttl is not None or spec.max_ttl is not None:
            bad("ttl", f"a {kind.name} role takes {key}, not ttl or max_ttl")
        return period, period
    if kind.max_ttl is None:  # the agent's own lease rules (iam_user)
        ttl = int(spec.ttl if spec.ttl is not None else defaults.ttl)
        max_ttl = int(spec.max_ttl if spec.max_ttl is not None else defaults.max_ttl)
        if ttl < kind.min_ttl:
            bad("ttl", f"must be at least {format_duration(kind.min_ttl)}")
        if spec.max_ttl is None and ttl > max_ttl:
            # The inherited cap is a limit too: a 13h ttl under the 12h default is a
            # typo, not a reason to keep keys alive longer than anyone set.
            bad(
                "ttl",
                f"{format_duration(ttl)} exceeds [lease] max_ttl ({format_duration(max_ttl)}) "
                "of config.toml; lower ttl, or set max_ttl in this role",
            )
        elif max_ttl < ttl:
            bad("max_ttl", f"must be at least ttl ({format_duration(ttl)})")
        return ttl, max_ttl
    cap = kind.max_ttl
    max_ttl = int(spec.max_ttl if spec.max_ttl is not None else cap)
    ttl = int(spec.ttl if spec.ttl is not None else min(3600, max_ttl))
    for key, value in (("ttl", ttl), ("max_ttl", max_ttl)):
        if not kind.min_ttl <= value <= cap:
            low, high = format_duration(kind.min_ttl), format_duration(cap)
            bad(key, f"{kind.name} durations must be between {low} and {high} (AWS limit)")
    if ttl > max_ttl:
        bad("ttl", f"must not exceed max_ttl ({format_duration(max_ttl)})")
    return ttl, max_ttl
