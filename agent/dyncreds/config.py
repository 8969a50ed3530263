"""config.toml and roles/NAME.toml: decoding, defaults and every check. Pure.

Loading never stops at the first problem: each table is decoded field by field
so ``dyncreds check`` can list everything wrong at once, as ``file:line: message``.
The checks are Vault's per credential type, plus the limits AWS enforces that
are knowable without calling it (policy size, name lengths, TTL bounds), so a
typo is reported by ``check`` or ``reload`` instead of by a failed issuance.
"""

from __future__ import annotations

import json
import re
import string
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

CredentialType = Literal["iam_user", "assumed_role", "federation_token", "session_token"]
CREDENTIAL_TYPES: tuple[CredentialType, ...] = (
    "iam_user",
    "assumed_role",
    "federation_token",
    "session_token",
)
_T = TypeVar("_T", bound=msgspec.Struct)

STS_TYPES = frozenset({"assumed_role", "federation_token", "session_token"})

ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# AWS limits that can be checked offline.
STS_MIN_TTL = 900
STS_MAX_TTL = {"assumed_role": 12 * 3600, "federation_token": 36 * 3600, "session_token": 36 * 3600}
INLINE_POLICY_MAX = 2048  # user inline policies and session policies, whitespace excluded
SESSION_POLICY_ARNS_MAX = 10
USER_MANAGED_POLICIES_MAX = 20
USER_GROUPS_MAX = 10
TAGS_MAX = 50
RESERVED_TAGS = 4  # dyncreds:agent, :lease, :role, :expires
TAG_KEY_MAX, TAG_VALUE_MAX = 128, 256
USER_PATH_MAX = 512
EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}")
POLICY_ARN = re.compile(r"arn:aws[a-z-]*:iam::(aws|\d{12}):policy/[\w+=,.@/-]{1,1024}")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
GROUP_NAME = re.compile(r"[\w+=,.@-]{1,128}")
USER_PATH = re.compile(r"/([\x21-\x7e]*/)?")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
TEMPLATE_FIELDS = frozenset({"user", "role", "unix_time", "random"})


# --------------------------------------------------------------------------- durations

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(value: object) -> int:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"`` or integer seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "15m" or integer seconds, got a boolean')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _DURATION.fullmatch(text)
        if text and match and any(match.groups()):
            days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
            return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        if text.isdigit():
            return int(text)
    raise ValueError(f'expected a duration like "15m", "1h30m" or integer seconds, got {value!r}')


def format_duration(seconds: float) -> str:
    """The inverse, for humans: 5400 -> "1h30m"."""
    total = int(seconds)
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, total = divmod(total, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts[:2])


class Seconds(int):
    """A duration field; decoded from either form by ``_dec_hook``."""


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Seconds:
        return Seconds(parse_duration(value))
    raise NotImplementedError


# --------------------------------------------------------------------------- schema


class _Table(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class AgentSettings(_Table):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    min_remaining: Seconds = Seconds(20 * 60)
    idle_after: Seconds = Seconds(3600)
    aws_concurrency: int = 8
    # A new iam_user key is served only after it worked this many times in a row
    # (IAM is eventually consistent; hashicorp/vault#3115).
    propagation_checks: int = 3
    propagation_timeout: Seconds = Seconds(60)
    # Each AWS call is bounded; the whole issuance is bounded too, so a client
    # never hangs on a sick AWS.
    aws_call_timeout: Seconds = Seconds(20)
    issue_timeout: Seconds = Seconds(40)
    # Users tagged with this agent's id that the journal does not know (it was
    # lost) are deleted once older than orphan_min_age; looked for this often.
    orphan_sweep_every: Seconds = Seconds(3600)
    orphan_min_age: Seconds = Seconds(300)


class RootSettings(_Table):
    profile: str | None = None
    credentials_file: str | None = None
    region: str = "us-east-1"
    iam_endpoint: str | None = None
    sts_endpoint: str | None = None
    max_retries: int = 5
    username_template: str = "dyncreds-{user}-{role}-{unix_time}-{random}"


class LeaseDefaults(_Table):
    ttl: Seconds = Seconds(3600)
    max_ttl: Seconds = Seconds(12 * 3600)


class MainConfig(_Table):
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    root: RootSettings = msgspec.field(default_factory=RootSettings)
    lease: LeaseDefaults = msgspec.field(default_factory=LeaseDefaults)


class RoleFile(_Table):
    """roles/NAME.toml as written; ``Role`` is what the agent uses."""

    credential_type: CredentialType | None = None
    policy_document: str | None = None
    policy_file: str | None = None
    policy_arns: list[str] = []
    iam_groups: list[str] = []
    iam_tags: dict[str, str] = {}
    user_path: str | None = None
    permissions_boundary_arn: str | None = None
    ttl: Seconds | None = None
    max_ttl: Seconds | None = None
    role_arns: list[str] = []
    external_id: str | None = None
    session_tags: dict[str, str] = {}
    region: str | None = None
    prefetch: bool = False


@dataclass(frozen=True)
class Role:
    name: str
    credential_type: CredentialType
    policy_document: str | None  # compact JSON, ready to send
    policy_arns: tuple[str, ...]
    iam_groups: tuple[str, ...]
    iam_tags: tuple[tuple[str, str], ...]
    user_path: str
    permissions_boundary_arn: str | None
    ttl: int
    max_ttl: int
    role_arns: tuple[str, ...]
    external_id: str | None
    session_tags: tuple[tuple[str, str], ...]
    region: str | None
    prefetch: bool
    source: Path | None = field(default=None, compare=False)

    @property
    def is_sts(self) -> bool:
        return self.credential_type in STS_TYPES


@dataclass(frozen=True)
class Config:
    main: MainConfig
    roles: dict[str, Role]
    base_dir: Path

    def credentials_file(self) -> Path | None:
        name = self.main.root.credentials_file
        return None if name is None else (self.base_dir / name)


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more problems; ``str()`` is the first, ``problems`` is all of them."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__(str(self.problems[0]) if self.problems else "invalid configuration")


def line_of(text: str, table: str | None, key: str) -> int | None:
    """Best-effort line of ``key`` in ``[table]`` (or the top level) of a TOML text."""
    current: str | None = None
    key_re = re.compile(rf"""\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    header_re = re.compile(r"\s*\[\s*([^\]\s]+)\s*\]")
    for number, line in enumerate(text.splitlines(), 1):
        header = header_re.match(line)
        if header:
            current = header.group(1)
            if table is not None and current == table and key == "":
                return number
            continue
        if current == table and key_re.match(line):
            return number
    return None


def _read_toml(path: Path, problems: list[Problem]) -> tuple[dict[str, Any], str] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem(path, None, "file not found"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(path, None, f"cannot read: {exc}"))
        return None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        problems.append(Problem(path, line, f"invalid TOML: {message}"))
        return None


def _decode_table(
    raw: Any,
    cls: type[_T],
    path: Path,
    text: str,
    table: str | None,
    problems: list[Problem],
) -> _T | None:
    """Decode one table field by field so that every bad field is reported."""
    prefix = f"{table}." if table else ""
    if not isinstance(raw, dict):
        problems.append(Problem(path, line_of(text, None, table or ""), f"{table} must be a table"))
        return None
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    good: dict[str, Any] = {}
    ok = True
    for key, value in raw.items():
        spec = fields.get(key)
        if spec is None:
            known = ", ".join(sorted(fields))
            problems.append(
                Problem(
                    path, line_of(text, table, key), f"unknown key {prefix}{key} (known: {known})"
                )
            )
            ok = False
            continue
        try:
            good[key] = msgspec.convert(value, spec.type, dec_hook=_dec_hook)
        except (msgspec.ValidationError, ValueError) as exc:
            detail = str(exc).replace(" - at `$`", "")
            problems.append(Problem(path, line_of(text, table, key), f"{prefix}{key}: {detail}"))
            ok = False
    if not ok:
        return None
    return msgspec.convert(good, cls, dec_hook=_dec_hook)


# --------------------------------------------------------------------------- config.toml


def load_main(path: Path, problems: list[Problem]) -> MainConfig | None:
    """Decode config.toml; an absent file means every default."""
    if not path.exists():
        return MainConfig()
    read = _read_toml(path, problems)
    if read is None:
        return None
    raw, text = read
    before = len(problems)
    tables: dict[str, Any] = {}
    for name, value in raw.items():
        cls = {"agent": AgentSettings, "root": RootSettings, "lease": LeaseDefaults}.get(name)
        if cls is None:
            problems.append(
                Problem(
                    path,
                    line_of(text, name, "") or line_of(text, None, name),
                    f"unknown table [{name}] (known: agent, root, lease)",
                )
            )
            continue
        tables[name] = _decode_table(value, cls, path, text, name, problems)
    if len(problems) > before:
        return None
    main = MainConfig(**{k: v for k, v in tables.items() if v is not None})
    _check_main(main, path, text, problems)
    return None if len(problems) > before else main


def _check_main(main: MainConfig, path: Path, text: str, problems: list[Problem]) -> None:
    def bad(table: str, key: str, message: str) -> None:
        problems.append(Problem(path, line_of(text, table, key), f"{table}.{key}: {message}"))

    agent, root, lease = main.agent, main.root, main.lease
    if not 1 <= agent.aws_concurrency <= 64:
        bad("agent", "aws_concurrency", "must be between 1 and 64")
    if agent.min_remaining < 60:
        bad("agent", "min_remaining", "must be at least 1m")
    if agent.idle_after < 60:
        bad("agent", "idle_after", "must be at least 1m")
    if not 0 <= agent.propagation_checks <= 20:
        bad("agent", "propagation_checks", "must be between 0 and 20")
    if agent.orphan_sweep_every < 60:
        bad("agent", "orphan_sweep_every", "must be at least 1m")
    if agent.aws_call_timeout < 1:
        bad("agent", "aws_call_timeout", "must be at least 1s")
    if agent.issue_timeout < agent.aws_call_timeout:
        bad("agent", "issue_timeout", "must be at least aws_call_timeout")
    if root.profile and root.credentials_file:
        bad(
            "root", "credentials_file", "set either root.profile or root.credentials_file, not both"
        )
    if not REGION.fullmatch(root.region):
        bad("root", "region", f"{root.region!r} is not an AWS region name")
    for key in ("iam_endpoint", "sts_endpoint"):
        url = getattr(root, key)
        if url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            bad("root", key, f"{url!r} is not an http(s) URL")
    if not 0 <= root.max_retries <= 20:
        bad("root", "max_retries", "must be between 0 and 20")
    template_problem = check_username_template(root.username_template)
    if template_problem:
        bad("root", "username_template", template_problem)
    if lease.ttl < 60:
        bad("lease", "ttl", "must be at least 1m")
    if lease.max_ttl < lease.ttl:
        bad("lease", "max_ttl", f"must be at least lease.ttl ({format_duration(lease.ttl)})")


def check_username_template(template: str) -> str | None:
    try:
        names = {
            name.split(".")[0].split("[")[0]
            for _, name, _, _ in string.Formatter().parse(template)
            if name is not None
        }
    except ValueError as exc:
        return f"invalid template: {exc}"
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        return f"unknown field {{{sorted(unknown)[0]}}} (known: user, role, unix_time, random)"
    if "random" not in names and "unix_time" not in names:
        return "must contain {random} or {unix_time} so that user names are unique"
    return None


# --------------------------------------------------------------------------- roles


def load_role(path: Path, defaults: LeaseDefaults, problems: list[Problem]) -> Role | None:
    name = path.stem
    before = len(problems)
    if not ROLE_NAME.fullmatch(name):
        problems.append(
            Problem(path, None, f"role name {name!r} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}")
        )
        return None
    read = _read_toml(path, problems)
    if read is None:
        return None
    raw, text = read
    spec = _decode_table(raw, RoleFile, path, text, None, problems)
    if spec is None:
        return None

    def bad(key: str, message: str) -> None:
        problems.append(Problem(path, line_of(text, None, key), f"{key}: {message}"))

    kind = spec.credential_type
    if kind is None:
        problems.append(
            Problem(
                path,
                None,
                "credential_type is required (iam_user, assumed_role, "
                "federation_token or session_token)",
            )
        )
        return None

    policy = _role_policy(spec, path, bad)

    # Which fields each type takes (Vault's checks).
    only_for = {
        "iam_groups": {"iam_user"},
        "iam_tags": {"iam_user"},
        "user_path": {"iam_user"},
        "permissions_boundary_arn": {"iam_user"},
        "role_arns": {"assumed_role"},
        "external_id": {"assumed_role"},
        "session_tags": {"assumed_role"},
        "policy_document": {"iam_user", "assumed_role", "federation_token"},
        "policy_file": {"iam_user", "assumed_role", "federation_token"},
        "policy_arns": {"iam_user", "assumed_role", "federation_token"},
    }
    for key, kinds in only_for.items():
        if kind not in kinds and raw.get(key) not in (None, [], {}):
            allowed = " and ".join(sorted(kinds))
            bad(key, f"not allowed for credential_type {kind} (only {allowed})")

    if kind == "iam_user" and not (policy or spec.policy_arns or spec.iam_groups):
        problems.append(
            Problem(
                path,
                None,
                "an iam_user role needs at least one of "
                "policy_document, policy_file, policy_arns or iam_groups",
            )
        )
    if kind == "federation_token" and not (policy or spec.policy_arns):
        problems.append(
            Problem(
                path,
                None,
                "a federation_token role needs policy_document, "
                "policy_file or policy_arns (without one the token can do nothing)",
            )
        )
    if kind == "assumed_role" and not spec.role_arns:
        problems.append(Problem(path, None, "an assumed_role role needs role_arns"))

    for arn in spec.policy_arns:
        if not POLICY_ARN.fullmatch(arn):
            bad("policy_arns", f"{arn!r} is not an IAM policy ARN")
    max_arns = USER_MANAGED_POLICIES_MAX if kind == "iam_user" else SESSION_POLICY_ARNS_MAX
    if len(spec.policy_arns) > max_arns:
        bad("policy_arns", f"at most {max_arns} for {kind}, got {len(spec.policy_arns)}")
    for arn in spec.role_arns:
        if not ROLE_ARN.fullmatch(arn):
            bad("role_arns", f"{arn!r} is not an IAM role ARN")
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
    if spec.permissions_boundary_arn is not None and not POLICY_ARN.fullmatch(
        spec.permissions_boundary_arn
    ):
        bad("permissions_boundary_arn", f"{spec.permissions_boundary_arn!r} is not a policy ARN")
    if spec.external_id is not None and not EXTERNAL_ID.fullmatch(spec.external_id):
        bad("external_id", "must be 2-1224 characters of letters, digits and +=,.@:/-")
    if spec.region is not None and not REGION.fullmatch(spec.region):
        bad("region", f"{spec.region!r} is not an AWS region name")

    ttl, max_ttl = _role_ttls(kind, spec, defaults, bad)

    if len(problems) > before:
        return None
    return Role(
        name=name,
        credential_type=kind,
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
        source=path,
    )


def _role_policy(spec: RoleFile, path: Path, bad: Any) -> str | None:
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
            bad(
                key,
                f"cannot read {policy_path}: {exc.strerror if isinstance(exc, OSError) else exc}",
            )
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


def _check_tags(key: str, tags: dict[str, str], limit: int, bad: Any) -> None:
    if len(tags) > limit:
        bad(key, f"at most {limit} tags, got {len(tags)}")
    for tag_key, value in tags.items():
        if not 1 <= len(tag_key) <= TAG_KEY_MAX or len(value) > TAG_VALUE_MAX:
            bad(key, f"tag {tag_key[:40]!r}: keys are 1-128 characters, values at most 256")
        if tag_key.lower().startswith(("aws:", "dyncreds:")):
            bad(key, f"tag {tag_key[:40]!r}: the aws: and dyncreds: prefixes are reserved")


def _role_ttls(kind: str, spec: RoleFile, defaults: LeaseDefaults, bad: Any) -> tuple[int, int]:
    if kind == "iam_user":
        ttl = int(spec.ttl if spec.ttl is not None else defaults.ttl)
        max_ttl = int(spec.max_ttl if spec.max_ttl is not None else defaults.max_ttl)
        if ttl < 60:
            bad("ttl", "must be at least 1m")
        if spec.max_ttl is None and ttl > max_ttl:
            max_ttl = ttl
        if max_ttl < ttl:
            bad("max_ttl", f"must be at least ttl ({format_duration(ttl)})")
        return ttl, max_ttl
    cap = STS_MAX_TTL[kind]
    max_ttl = int(spec.max_ttl if spec.max_ttl is not None else cap)
    ttl = int(spec.ttl if spec.ttl is not None else min(3600, max_ttl))
    for key, value in (("ttl", ttl), ("max_ttl", max_ttl)):
        if not STS_MIN_TTL <= value <= cap:
            bad(key, f"{kind} durations must be between 15m and {format_duration(cap)} (AWS limit)")
    if ttl > max_ttl:
        bad("ttl", f"must not exceed max_ttl ({format_duration(max_ttl)})")
    return ttl, max_ttl


# --------------------------------------------------------------------------- everything


def load(config_dir: Path) -> Config:
    """config.toml plus every roles/*.toml; raises ConfigError listing all problems."""
    problems: list[Problem] = []
    main = load_main(config_dir / "config.toml", problems)
    defaults = main.lease if main else LeaseDefaults()
    roles: dict[str, Role] = {}
    roles_dir = config_dir / "roles"
    if roles_dir.is_dir():
        for path in sorted(roles_dir.glob("*.toml")):
            role = load_role(path, defaults, problems)
            if role is not None:
                roles[role.name] = role
    if problems or main is None:
        raise ConfigError(problems)
    return Config(main=main, roles=roles, base_dir=config_dir)


def render_role_toml(spec: dict[str, Any]) -> str:
    """A roles/NAME.toml text for ``role create``; keys in the SPEC's order."""
    order = [f.encode_name for f in msgspec.structs.fields(RoleFile)]
    lines = []
    for key in order:
        if key not in spec or spec[key] in (None, [], {}):
            continue
        lines.append(f"{key} = {_toml_value(spec[key])}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "\n" in value and "'''" not in value:
            return f"'''\n{value}'''"
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
