"""Configuration commands: check, aws-config, reload, and the seed's
``role create|list|show|delete``.

Every role file is validated before it is written (written to a staging
directory the agent does not read, loaded with the same code the agent uses, and
only then renamed into place), so these commands never leave a configuration the
agent would refuse. After a change, a running agent is asked to reload.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dyncreds import config, paths
from dyncreds.client import EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, Client, ClientError
from dyncreds.commands.common import CliError, get_paths, load, print_json
from dyncreds.kinds import CREDENTIAL_TYPES


def reload_agent(p: paths.Paths) -> str:
    """Ask a running agent to reload; say what happened, in words."""
    try:
        with Client(p.socket, timeout=30) as client:
            roles = client.request("reload")["roles"]
        return f"agent reloaded ({len(roles)} roles)"
    except ClientError as exc:
        if exc.status == EXIT_NOT_RUNNING:
            return "agent not running; it will read the change when it starts"
        return f"agent did not reload: {exc}"


def cmd_reload(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        roles = client.request("reload")["roles"]
    if args.json:
        print_json({"roles": roles})
    else:
        print(f"reloaded; {len(roles)} roles: {', '.join(roles) or '-'}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    p = get_paths(args)
    try:
        cfg = config.load(p.config_dir)
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if args.json:
            print_json({"ok": False, "problems": [str(x) for x in exc.problems]})
        return EXIT_USAGE
    root_problems: list[str] = []
    creds_file = cfg.credentials_file()
    if creds_file is not None:
        from dyncreds.aws.rootkeys import read_credentials_file
        from dyncreds.protocol import DyncredsError

        try:
            read_credentials_file(creds_file)
        except DyncredsError as exc:
            root_problems.append(exc.message)
    if root_problems:
        for message in root_problems:
            print(message, file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print_json({"ok": True, "roles": sorted(cfg.roles)})
    else:
        print(
            f"{p.config_dir}: ok, {len(cfg.roles)} roles"
            + (f" ({', '.join(sorted(cfg.roles))})" if cfg.roles else "")
        )
    return EXIT_OK


def shim_path() -> str:
    """The absolute path of dyncreds-shim beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "dyncreds-shim"
    if beside.exists():
        return str(beside)
    found = shutil.which("dyncreds-shim")
    return str(Path(found).absolute()) if found else str(beside)


def aws_config_sections(roles: Sequence[tuple[str, str | None]], default_region: str) -> str:
    shim = shim_path()
    sections = []
    for name, region in roles:
        sections.append(
            f"[profile {name}]\ncredential_process = {shim} {name}\n"
            f"region = {region or default_region}\n"
        )
    return "\n".join(sections)


def cmd_aws_config(args: argparse.Namespace) -> int:
    cfg = load(args)
    wanted = []
    for name in args.roles or sorted(cfg.roles):
        role = cfg.roles.get(name)
        if role is None:
            raise CliError(
                f"unknown role {name!r} (known: {', '.join(sorted(cfg.roles))})", EXIT_USAGE
            )
        wanted.append((name, role.region))
    print(aws_config_sections(wanted, cfg.main.root.region), end="")
    return EXIT_OK


def cmd_role_create(args: argparse.Namespace) -> int:
    p = get_paths(args)
    name = args.name
    if not config.ROLE_NAME.fullmatch(name):
        raise CliError(
            f"role name {name!r} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}", EXIT_USAGE
        )
    target = p.role_file(name)
    if target.exists() and not args.force:
        raise CliError(f"role {name} exists ({target}); use --force to replace it", EXIT_USAGE)
    text = config.render_role_toml(role_spec(args))
    # Validate with the agent's own loader before the agent can see the file: it is
    # staged under a directory the agent does not read, then renamed into place.
    staging_dir = p.roles_dir / f".staging-{os.getpid()}"
    staging_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir / f"{name}.toml"
    staging.write_text(text)
    try:
        main_problems: list[config.Problem] = []
        main = config.load_main(p.config_file, main_problems)
        problems: list[config.Problem] = []
        config.load_role(staging, main.lease if main else config.LeaseDefaults(), problems)
        if problems:
            for problem in problems:
                print(config.Problem(target, problem.line, problem.message), file=sys.stderr)
            return EXIT_USAGE
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
        staging_dir.rmdir()
    print(f"wrote {target}; {reload_agent(p)}")
    return EXIT_OK


def role_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The role file's fields from ``role create``'s flags (checked later, by the loader)."""
    spec: dict[str, Any] = {"credential_type": args.type}
    policy = _policy_text(args)
    if policy is not None:
        try:  # stored indented; the loader compacts and checks it
            spec["policy_document"] = json.dumps(json.loads(policy), indent=2)
        except ValueError as exc:
            raise CliError(f"policy is not valid JSON: {exc}", EXIT_USAGE) from None
    spec["policy_arns"] = args.policy_arn or []
    spec["iam_groups"] = args.iam_group or []
    spec["role_arns"] = args.role_arn or []
    for key in ("ttl", "max_ttl", "external_id", "user_path", "permissions_boundary_arn", "region"):
        value = getattr(args, key)
        if value is not None:
            spec[key] = value
    if args.prefetch:
        spec["prefetch"] = True
    tags = {}
    for item in args.tag or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--tag wants KEY=VALUE, got {item!r}", EXIT_USAGE)
        tags[key] = value
    if tags:
        spec["iam_tags" if args.type == "iam_user" else "session_tags"] = tags
    return spec


def _policy_text(args: argparse.Namespace) -> str | None:
    if args.policy_document:
        return str(args.policy_document)
    if args.policy_file == "-":
        return sys.stdin.read()
    if args.policy_file:
        policy_path = Path(args.policy_file)
        try:
            return policy_path.read_text()
        except OSError as exc:
            raise CliError(f"{policy_path}: {exc.strerror}", EXIT_USAGE) from None
    return None


def cmd_role_list(args: argparse.Namespace) -> int:
    p = get_paths(args)
    rows = []
    problems: list[config.Problem] = []
    for path in sorted(p.roles_dir.glob("*.toml")) if p.roles_dir.is_dir() else []:
        role = config.load_role(path, config.LeaseDefaults(), problems)
        rows.append(
            {
                "name": path.stem,
                "type": role.credential_type if role else "invalid",
                "file": str(path),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no roles in {p.roles_dir}")
    else:
        for row in rows:
            print(f"{row['name']:24} {row['type']:17} {row['file']}")
    return 0


def cmd_role_show(args: argparse.Namespace) -> int:
    p = get_paths(args)
    path = p.role_file(args.name)
    if not path.exists():
        print(f"dyncreds: no role {args.name!r} in {p.roles_dir}", file=sys.stderr)
        return 2
    print(path.read_text(), end="")
    return 0


def cmd_role_delete(args: argparse.Namespace) -> int:
    p = get_paths(args)
    path = p.role_file(args.name)
    if not path.exists():
        print(f"dyncreds: no role {args.name!r} in {p.roles_dir}", file=sys.stderr)
        return 2
    path.unlink()
    print(f"removed {path}; {reload_agent(p)}")
    return 0


def add_commands(add: Any, sub: Any, common: Any) -> None:
    add("reload", cmd_reload, "re-read configuration (same as SIGHUP)")
    add("check", cmd_check, "validate configuration offline")
    p = add("aws-config", cmd_aws_config, "print ~/.aws/config profiles that use the shim")
    p.add_argument("roles", nargs="*", help="roles to print (default: all)")

    p = sub.add_parser("role", parents=[common], help="create, list, show or delete roles")
    roles = p.add_subparsers(dest="action", metavar="ACTION")
    roles.required = True
    p = roles.add_parser("create", parents=[common], help="write roles/NAME.toml and reload")
    p.add_argument("name")
    p.add_argument(
        "--type", required=True, choices=list(CREDENTIAL_TYPES), help="the credential type"
    )
    p.add_argument("--policy-file", help="policy JSON file, or - for stdin")
    p.add_argument("--policy-document", help="policy JSON inline")
    p.add_argument("--policy-arn", action="append", help="a managed policy ARN (repeatable)")
    p.add_argument("--iam-group", action="append", help="an IAM group (iam_user; repeatable)")
    p.add_argument("--role-arn", action="append", help="a role to assume (assumed_role)")
    p.add_argument("--external-id", help="sts:ExternalId (assumed_role)")
    p.add_argument("--ttl", help='lease or session length, e.g. "1h"')
    p.add_argument("--max-ttl", dest="max_ttl", help='cap on the lifetime, e.g. "12h"')
    p.add_argument("--user-path", dest="user_path", help="IAM path of users (iam_user)")
    p.add_argument(
        "--permissions-boundary-arn",
        dest="permissions_boundary_arn",
        help="permissions boundary of users (iam_user)",
    )
    p.add_argument("--region", help="region handed to programs")
    p.add_argument("--tag", action="append", help="KEY=VALUE (iam_tags or session_tags)")
    p.add_argument("--prefetch", action="store_true", help="keep a lease warm from start-up")
    p.add_argument("--force", action="store_true", help="replace an existing role")
    p.set_defaults(fn=cmd_role_create)
    p = roles.add_parser("list", parents=[common], help="roles in the config directory")
    p.set_defaults(fn=cmd_role_list)
    p = roles.add_parser("show", parents=[common], help="print roles/NAME.toml")
    p.add_argument("name")
    p.set_defaults(fn=cmd_role_show)
    p = roles.add_parser("delete", parents=[common], help="remove roles/NAME.toml and reload")
    p.add_argument("name")
    p.set_defaults(fn=cmd_role_delete)
