"""config.toml: decoding and the checks on [agent], [root], [lease], [audit], [fleet]
and [[access]]."""

from __future__ import annotations

import re
import string
import tomllib
from pathlib import Path
from typing import Any

from dyncreds.config.problems import Problem, decode_table, line_of, read_toml
from dyncreds.config.schema import (
    MAIN_TABLES,
    AccessRule,
    AgentSettings,
    MainConfig,
    RootSettings,
    format_duration,
)

REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d", re.ASCII)
URL = re.compile(r"https?://[^\s/]+(/\S*)?")
# An MFA device: a virtual device ARN, or a hardware token serial (GetSessionToken).
MFA_SERIAL = re.compile(
    r"arn:aws[a-z-]*:iam::\d{12}:(mfa|u2f)/[\w+=,.@/-]{1,512}|[\w+=/:,.@-]{9,256}",
    re.ASCII,
)
TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
FLEET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ACCESS_HEADER = re.compile(r"\s*\[\[\s*access\s*\]\]")
UNIX_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}\$?")
TEMPLATE_FIELDS = frozenset({"user", "role", "host", "unix_time", "random"})


def load_main(path: Path, problems: list[Problem]) -> MainConfig | None:
    """Decode config.toml; an absent file means every default (an unreadable one,
    or one in an unreadable directory, is a problem)."""
    try:
        path.stat()
    except FileNotFoundError:
        return MainConfig()
    except OSError as exc:
        problems.append(Problem(path, None, f"cannot read: {exc.strerror or exc}"))
        return None
    read = read_toml(path, problems)
    if read is None:
        return None
    return main_from_text(path, read[1], problems)


def main_from_text(path: Path, text: str, problems: list[Problem]) -> MainConfig | None:
    """Decode and check config.toml's text (``path`` names it in problems)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(Problem(path, None, f"invalid TOML: {exc}"))
        return None
    before = len(problems)
    tables: dict[str, Any] = {}
    for name, value in raw.items():
        cls = MAIN_TABLES.get(name)
        if cls is None:
            known = ", ".join(MAIN_TABLES)
            line = line_of(text, name, "") or line_of(text, None, name)
            problems.append(Problem(path, line, f"unknown table [{name}] (known: {known})"))
            continue
        if name == "access":
            tables[name] = decode_rules(value, path, text, problems)
            continue
        tables[name] = decode_table(value, cls, path, text, name, problems)
    if len(problems) > before:
        return None
    main = MainConfig(**{k: v for k, v in tables.items() if v is not None})
    for table, key, message in check_main(main):
        if table == "access":  # key: the rule's number ("" for all of them)
            where = f"[[access]] rule {key}" if key else "[[access]]"
            problems.append(Problem(path, rule_line(text, int(key or 1)), f"{where}: {message}"))
            continue
        problems.append(Problem(path, line_of(text, table, key), f"{table}.{key}: {message}"))
    return None if len(problems) > before else main


def check_main(main: MainConfig) -> list[tuple[str, str, str]]:
    """Every problem as (table, key, message)."""
    root = main.root
    out: list[tuple[str, str, str]] = []
    rules = _agent_rules(main.agent) + _root_rules(root) + _lease_and_audit_rules(main)
    out.extend((table, key, message) for table, key, good, message in rules if not good)
    if main.fleet is not None:
        out.extend(check_fleet(main))
    for key in ("iam_endpoint", "sts_endpoint", "signin_endpoint"):
        url = getattr(root, key)
        if url is not None and not URL.fullmatch(url):
            out.append(("root", key, f"{url!r} is not an http(s) URL"))
    out.extend(check_access(main))
    template_problem = check_username_template(root.username_template)
    if template_problem:
        out.append(("root", "username_template", template_problem))
    return out


# (table, key, holds, message): a rule that does not hold is a problem.
Rule = tuple[str, str, bool, str]


def _agent_rules(agent: AgentSettings) -> list[Rule]:
    """The [agent] table's limits."""
    return [
        ("agent", "aws_concurrency", 1 <= agent.aws_concurrency <= 64, "must be between 1 and 64"),
        ("agent", "min_remaining", agent.min_remaining >= 60, "must be at least 1m"),
        ("agent", "idle_after", agent.idle_after >= 60, "must be at least 1m"),
        (
            "agent",
            "propagation_checks",
            0 <= agent.propagation_checks <= 20,
            "must be between 0 and 20",
        ),
        ("agent", "orphan_sweep_every", agent.orphan_sweep_every >= 60, "must be at least 1m"),
        ("agent", "aws_call_timeout", agent.aws_call_timeout >= 1, "must be at least 1s"),
        (
            "agent",
            "issue_timeout",
            agent.issue_timeout >= agent.aws_call_timeout,
            "must be at least aws_call_timeout",
        ),
    ]


def _root_rules(root: RootSettings) -> list[Rule]:
    """The [root] table's limits and the fields that need each other."""
    return [
        (
            "root",
            "credentials_file",
            sum(
                map(
                    bool,
                    (root.profile, root.credentials_file, root.systemd_credential, root.keyring),
                )
            )
            <= 1,
            "set at most one of root.profile, credentials_file, systemd_credential, keyring",
        ),
        (
            "root",
            "region",
            bool(REGION.fullmatch(root.region)),
            f"{root.region!r} is not an AWS region name",
        ),
        ("root", "max_retries", 0 <= root.max_retries <= 20, "must be between 0 and 20"),
        (
            "root",
            "unlock_for",
            15 * 60 <= root.unlock_for <= 36 * 3600,
            "must be between 15m and 36h (GetSessionToken's limits)",
        ),
        (
            "root",
            "mfa_serial",
            root.mfa_serial is None or bool(MFA_SERIAL.fullmatch(root.mfa_serial)),
            "must be an MFA device ARN (arn:aws:iam::ACCOUNT:mfa/NAME) or a hardware serial",
        ),
        (
            "root",
            "mfa_process",
            root.mfa_process is None or (bool(root.mfa_process.strip()) and bool(root.mfa_serial)),
            "needs root.mfa_serial (the code it prints is for that device), and a command",
        ),
        (
            "root",
            "rotate_every",
            root.rotate_every == 0 or root.rotate_every >= 10,
            "must be at least 10s (or 0 for never)",
        ),
        (
            "root",
            "rotate_every",
            root.rotate_every == 0 or bool(root.credentials_file or root.keyring),
            "the agent can only rotate a key it can write back: set root.credentials_file "
            "or root.keyring (a profile or systemd credential is rotated by what manages it)",
        ),
    ]


def _lease_and_audit_rules(main: MainConfig) -> list[Rule]:
    """The [lease] and [audit] tables' limits."""
    lease = main.lease
    return [
        ("lease", "ttl", lease.ttl >= 60, "must be at least 1m"),
        ("audit", "max_size", main.audit.max_size >= 4096, "must be at least 4096 bytes"),
        (
            "audit",
            "file",
            "/" not in main.audit.file and main.audit.file not in (".", ".."),
            "a file name in the state dir (no /)",
        ),
        (
            "audit",
            "required",
            not (main.audit.required and not main.audit.file),
            "refuses every credential request without an audit file: set [audit] file",
        ),
        (
            "lease",
            "max_ttl",
            lease.max_ttl >= lease.ttl,
            f"must be at least lease.ttl ({format_duration(lease.ttl)})",
        ),
    ]


def decode_rules(
    value: Any, path: Path, text: str, problems: list[Problem]
) -> list[AccessRule] | None:
    """[[access]]: an array of tables, each decoded like any other table."""
    if not isinstance(value, list):
        line = line_of(text, None, "access")
        problems.append(Problem(path, line, "access must be an array of tables: [[access]]"))
        return None
    rules = [decode_table(raw, AccessRule, path, text, "access", problems) for raw in value]
    return None if None in rules else [r for r in rules if r is not None]


def check_access(main: MainConfig) -> list[tuple[str, str, str]]:
    """[[access]] problems as ("access", the rule's number, message)."""
    if main.access and main.agent.mode != "system":
        return [("access", "", 'rules apply only in system mode: set agent.mode = "system"')]
    out: list[tuple[str, str, str]] = []
    for number, rule in enumerate(main.access, 1):
        problems = [
            (not rule.users and not rule.groups, "names nobody: give users or groups"),
            (not rule.roles, 'names no role ("*" is every role)'),
            (not rule.ops, "allows no op"),
        ] + [
            (not UNIX_NAME.fullmatch(name), f"{name[:40]!r} is not a user or group name")
            for name in (*rule.users, *rule.groups)
        ]
        out.extend(("access", str(number), message) for bad, message in problems if bad)
    return out


def rule_line(text: str, number: int) -> int | None:
    """The line of the ``number``-th ``[[access]]`` header."""
    seen = 0
    for line_number, line in enumerate(text.splitlines(), 1):
        if ACCESS_HEADER.match(line):
            seen += 1
            if seen == number:
                return line_number
    return None


def check_fleet(main: MainConfig) -> list[tuple[str, str, str]]:
    fleet = main.fleet
    assert fleet is not None
    rules = [
        ("table", bool(TABLE_NAME.fullmatch(fleet.table)), "3-255 of A-Z a-z 0-9 _ - ."),
        ("name", bool(FLEET_NAME.fullmatch(fleet.name)), "1-64 of A-Z a-z 0-9 _ - ."),
        ("region", bool(REGION.fullmatch(fleet.region)), f"{fleet.region!r} is not a region"),
        (
            "endpoint",
            fleet.endpoint is None or bool(URL.fullmatch(fleet.endpoint)),
            "an http(s) URL",
        ),
        ("heartbeat", fleet.heartbeat >= 1, "must be at least 1s"),
        (
            "dead_after",
            fleet.dead_after >= 3 * fleet.heartbeat,
            "must be at least 3 heartbeats (a late heartbeat is not a death)",
        ),
        (
            "table",
            main.root.mfa_serial is None,
            "a fleet agent heartbeats unattended, which an MFA-locked root cannot; "
            "remove root.mfa_serial or [fleet]",
        ),
    ]
    return [("fleet", key, message) for key, good, message in rules if not good]


def check_username_template(template: str) -> str | None:
    problem = check_template(template)
    if problem:
        return problem
    if "{random}" not in template and "{unix_time}" not in template:
        return "must contain {random} or {unix_time} so that user names are unique"
    return None


def check_template(template: str) -> str | None:
    """A name template: only the known fields, well formed."""
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
        known = ", ".join(sorted(TEMPLATE_FIELDS))
        return f"unknown field {{{sorted(unknown)[0]}}} (known: {known})"
    return None
