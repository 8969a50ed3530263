"""The shape of config.toml and roles/NAME.toml (durations: timefmt.py). Pure.

msgspec Structs with ``forbid_unknown_fields`` describe the files as written;
``Role`` and ``Config`` are what the agent uses once every check has passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from dyncreds.kinds import KINDS, CredentialType, Kind
from dyncreds.timefmt import format_duration as format_duration
from dyncreds.timefmt import parse_duration as parse_duration

ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


# --------------------------------------------------------------------------- durations


class Seconds(int):
    """A duration field; decoded from either form by ``dec_hook``."""


def dec_hook(kind: type, value: Any) -> Any:
    if kind is Seconds:
        return Seconds(parse_duration(value))
    raise NotImplementedError


# --------------------------------------------------------------------------- files as written


class Table(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class AgentSettings(Table):
    # "system": one agent serves a host's users, each request decided by [[access]].
    mode: Literal["user", "system"] = "user"
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
    # A CreateUser whose issuance gave up may still reach AWS until its SigV4
    # signature expires (5 minutes): its user is deleted again after this long.
    create_grace: Seconds = Seconds(300)


class RootSettings(Table):
    profile: str | None = None
    credentials_file: str | None = None
    # Read from $CREDENTIALS_DIRECTORY/NAME: systemd's LoadCredential[Encrypted]=
    # keeps the key encrypted at rest and hands it to this unit only.
    systemd_credential: str | None = None
    # The OS keyring's item (service "dyncreds", this name), through `keyring`.
    keyring: str | None = None
    region: str = "us-east-1"
    iam_endpoint: str | None = None
    sts_endpoint: str | None = None
    max_retries: int = 5
    username_template: str = "dyncreds-{user}-{role}-{unix_time}-{random}"
    signin_endpoint: str = "https://signin.aws.amazon.com/federation"
    # With an MFA device, the long-lived key only ever calls GetSessionToken with a
    # code: the agent starts locked and every other call is signed by that session.
    mfa_serial: str | None = None
    # A command printing the current code (aws-vault's mfa_process), run by
    # `dyncreds unlock`: "ykman oath accounts code --single NAME".
    mfa_process: str | None = None
    unlock_for: Seconds = Seconds(12 * 3600)
    # 0 = never. The key's own CreateDate in IAM is the schedule's origin, so a
    # restart neither postpones nor repeats a rotation.
    rotate_every: Seconds = Seconds(0)


class LeaseDefaults(Table):
    ttl: Seconds = Seconds(3600)
    max_ttl: Seconds = Seconds(12 * 3600)


class AuditSettings(Table):
    file: str = "audit.jsonl"  # relative to the state dir; "" turns the audit log off
    max_size: int = 10 << 20  # bytes; then it is rotated, one old file kept
    required: bool = False  # Vault's fail-closed: refuse credentials that cannot be recorded


class FleetSettings(Table):
    """Absent: one machine, the SQLite journal. Present: the journal is the fleet's
    DynamoDB table, shared with every agent of the same ``name``."""

    table: str = "dyncreds-fleet"
    name: str = "default"
    region: str = "us-east-1"
    endpoint: str | None = None
    heartbeat: Seconds = Seconds(30)
    dead_after: Seconds = Seconds(300)


ACCESS_OPS = ("credentials", "status", "revoke", "admin")
AccessOp = Literal["credentials", "status", "revoke", "admin"]


class AccessRule(Table):
    """One [[access]] table: who (users and/or groups), which roles (names or
    shell-style globs), which ops. System mode only."""

    users: list[str] = []
    groups: list[str] = []
    roles: list[str] = msgspec.field(default_factory=lambda: ["*"])
    ops: list[AccessOp] = msgspec.field(default_factory=lambda: ["credentials", "status"])


class MainConfig(Table):
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    root: RootSettings = msgspec.field(default_factory=RootSettings)
    lease: LeaseDefaults = msgspec.field(default_factory=LeaseDefaults)
    audit: AuditSettings = msgspec.field(default_factory=AuditSettings)
    fleet: FleetSettings | None = None
    access: list[AccessRule] = []


MAIN_TABLES: dict[str, type[Table]] = {
    "agent": AgentSettings,
    "root": RootSettings,
    "lease": LeaseDefaults,
    "audit": AuditSettings,
    "fleet": FleetSettings,
    "access": AccessRule,  # [[access]], an array of these
}


class RoleFile(Table):
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
    session_name: str | None = None
    source_identity: str | None = None
    revoke_sessions: bool = False
    username: str | None = None
    rotation_period: Seconds | None = None


# --------------------------------------------------------------------------- checked


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
    session_name: str | None = None  # template; None: [root] username_template
    source_identity: str | None = None  # template
    revoke_sessions: bool = False
    username: str | None = None  # static_user: the existing IAM user
    source: Path | None = field(default=None, compare=False)
    # The kind's own role-file keys (``Kind.options``, a msgspec Struct), if it has any.
    options: Any = field(default=None, hash=False)

    @property
    def kind(self) -> Kind:
        return KINDS[self.credential_type]

    @property
    def warm(self) -> bool:
        """Kept fresh from start-up, used or not (prefetch, or a rotated key)."""
        return self.prefetch or self.kind.always_warm


@dataclass(frozen=True)
class Config:
    main: MainConfig
    roles: dict[str, Role]
    base_dir: Path

    def credentials_file(self) -> Path | None:
        name = self.main.root.credentials_file
        return None if name is None else (self.base_dir / name)
