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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dyncreds.client import EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, Client
from dyncreds.commands.common import (
    CliError,
    Commands,
    CredentialTypes,
    get_paths,
    load,
    print_json,
)
from dyncreds.commands.completion import offer_files, offer_roles

if TYPE_CHECKING:
    from dyncreds import paths


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def reload_agent(p: paths.Paths) -> str:
    """Ask a running agent to reload - if it is the agent of this configuration -
    and say what happened, in words."""
    try:
        with Client(p.socket, timeout=30) as client:
            theirs = client.request("status")["agent"].get("config_dir")
            if theirs and Path(theirs) != p.config_dir:
                return (
                    f"the agent on {p.socket} reads {theirs}, not {p.config_dir}; "
                    "it was not reloaded"
                )
            roles = client.request("reload")["roles"]
        return f"agent reloaded ({plural(len(roles), 'role')})"
    except CliError as exc:
        if exc.status == EXIT_NOT_RUNNING:
            return "agent not running; it will read the change when it starts"
        return f"agent did not reload: {exc}"


def cmd_reload(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        roles = client.request("reload")["roles"]
    if args.json:
        print_json({"roles": roles})
    else:
        print(f"reloaded; {plural(len(roles), 'role')}: {', '.join(roles) or '-'}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from dyncreds import config
    from dyncreds.aws.rootkeys import read_credentials_file
    from dyncreds.commands import imds
    from dyncreds.protocol import DyncredsError
    from dyncreds.views import root_source, root_warning

    p = get_paths(args)
    problems: list[str] = []
    roles: list[str] = []
    try:
        cfg = config.load(p.config_dir)
    except config.ConfigError as exc:
        problems = [str(x) for x in exc.problems]
    else:
        roles = sorted(cfg.roles)
        creds_file = cfg.credentials_file()
        if creds_file is not None:
            try:
                read_credentials_file(creds_file)
            except DyncredsError as exc:
                problems.append(exc.message)
    if args.json:
        print_json({"ok": not problems, "problems": problems, "roles": roles})
    elif problems:
        print("\n".join(problems), file=sys.stderr)
    else:
        listed = f" ({', '.join(roles)})" if roles else ""
        print(f"{p.config_dir}: ok, {plural(len(roles), 'role')}{listed}")
        if warning := root_warning(cfg.main.root):
            print(f"warning: {warning}", file=sys.stderr)
        if warning := imds.check_warning(cfg.main.agent.mode, root_source(cfg.main.root)):
            print(f"warning: {warning}", file=sys.stderr)
    return EXIT_USAGE if problems else EXIT_OK


def shim_path() -> Path | None:
    """The dyncreds-shim of this installation: beside this Python (a venv, pipx),
    in the user scripts dir (pip --user), or on PATH - whichever exists."""
    import shutil
    import sysconfig

    candidates = [Path(sys.executable).parent / "dyncreds-shim"]
    user_scripts = sysconfig.get_path("scripts", f"{os.name}_user")
    if user_scripts:
        candidates.append(Path(user_scripts) / "dyncreds-shim")
    found = shutil.which("dyncreds-shim")
    if found:
        candidates.append(Path(found).absolute())
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def aws_config_sections(
    roles: Sequence[tuple[str, str | None]], default_region: str, shim: Path
) -> str:
    sections = []
    for name, region in roles:
        sections.append(
            f"[profile {name}]\ncredential_process = {shim} {name}\n"
            f"region = {region or default_region}\n"
        )
    return "\n".join(sections)


def cmd_aws_config(args: argparse.Namespace) -> int:
    cfg = load(args)
    regions = {name: role.region for name, role in cfg.roles.items()}
    if not regions or any(name not in regions for name in args.roles):
        regions = {**served_roles(args), **regions}
    wanted = []
    for name in args.roles or sorted(regions):
        if name not in regions:
            known = ", ".join(sorted(regions)) or "none"
            raise CliError(f"unknown role {name!r} (known: {known})", EXIT_USAGE)
        wanted.append((name, regions[name]))
    shim = Path(args.shim) if args.shim else shim_path()
    if shim is None or not (shim.is_file() and os.access(shim, os.X_OK)):
        raise CliError(
            f"no dyncreds-shim found ({shim or 'not beside ' + sys.executable + ' nor on PATH'}); "
            "reinstall dyncreds, or name it with --shim PATH",
            EXIT_USAGE,
        )
    print(aws_config_sections(wanted, cfg.main.root.region, shim.absolute()), end="")
    return EXIT_OK


def served_roles(args: argparse.Namespace) -> dict[str, str | None]:
    """The roles the agent serves this user (a system agent's, whose configuration
    the user cannot read), by name, with their regions; none if it cannot say."""
    try:
        with Client(get_paths(args).socket, timeout=10) as client:
            listed = client.request("roles")["roles"]
    except CliError:
        return {}
    return {str(r["name"]): r.get("region") for r in listed}


def cmd_role_create(args: argparse.Namespace) -> int:
    from dyncreds import config

    p = get_paths(args)
    name = args.name
    if not config.ROLE_NAME.fullmatch(name):
        raise CliError(
            f"role name {name!r} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}", EXIT_USAGE
        )
    target = p.role_file(name)
    if target.exists() and not args.force:
        raise CliError(f"role {name} exists ({target}); use --force to replace it", EXIT_USAGE)
    existing = target.read_text(encoding="utf-8") if target.exists() else None
    text = config.render_role_toml(role_spec(args), existing)
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
    """The configured roles, read from the files (no agent needed): ``role list``
    and ``roles`` give the same answer."""
    from dyncreds import config
    from dyncreds.timefmt import format_duration

    p = get_paths(args)
    problems: list[config.Problem] = []
    main = config.load_main(p.config_file, problems)
    defaults = main.lease if main else config.LeaseDefaults()
    rows: list[dict[str, Any]] = []
    for path in config.role_files(p.roles_dir, problems):
        role = config.load_role(path, defaults, problems)
        rows.append(
            {
                "name": path.stem,
                "type": role.credential_type if role else "invalid",
                "ttl": role.ttl if role else None,
                "region": role.region if role else None,
                "file": str(path),
            }
        )
    if args.json:
        print_json(rows)
    elif not rows:
        print(f"no roles in {p.roles_dir} (add one with `dyncreds role create`)")
    else:
        for row in rows:
            ttl = format_duration(row["ttl"]) if row["ttl"] else "-"
            print(f"{row['name']:24} {row['type']:17} ttl={ttl:7} {row['file']}")
    if problems and not args.json:
        print(f"({plural(len(problems), 'problem')}; run `dyncreds check`)", file=sys.stderr)
    return EXIT_OK


def cmd_role_show(args: argparse.Namespace) -> int:
    p = get_paths(args)
    path = p.role_file(args.name)
    if not path.exists():
        print(f"dyncreds: no role {args.name!r} in {p.roles_dir}", file=sys.stderr)
        return EXIT_USAGE
    print(path.read_text(), end="")
    return EXIT_OK


def cmd_role_delete(args: argparse.Namespace) -> int:
    p = get_paths(args)
    path = p.role_file(args.name)
    if not path.exists():
        print(f"dyncreds: no role {args.name!r} in {p.roles_dir}", file=sys.stderr)
        return EXIT_USAGE
    path.unlink()
    print(f"removed {path}; {reload_agent(p)}")
    return EXIT_OK


def add_commands(cli: Commands) -> None:
    cli.add("roles", cmd_role_list, "configured roles and their types (same as `role list`)")
    cli.add("reload", cmd_reload, "re-read configuration (same as SIGHUP)")
    cli.add("check", cmd_check, "validate configuration offline")
    p = cli.add("aws-config", cmd_aws_config, "print ~/.aws/config profiles that use the shim")
    offer_roles(p.add_argument("roles", nargs="*", help="roles to print (default: all)"))
    offer_files(
        p.add_argument("--shim", help="the dyncreds-shim path to write (default: this install's)")
    )

    roles = cli.group("role", "create, list, show or delete roles", "ACTION")
    p = roles.add("create", cmd_role_create, "write roles/NAME.toml and reload")
    p.add_argument("name", help="the role's name: [A-Za-z0-9][A-Za-z0-9_-]{0,63}")
    p.add_argument(
        "--type",
        required=True,
        choices=CredentialTypes(),
        metavar="TYPE",
        help="the credential type: %(choices)s",
    )
    offer_files(p.add_argument("--policy-file", help="policy JSON file, or - for stdin"))
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
    roles.add("list", cmd_role_list, "roles in the config directory")
    p = roles.add("show", cmd_role_show, "print roles/NAME.toml")
    offer_roles(p.add_argument("name", help="the role's name"))
    p = roles.add("delete", cmd_role_delete, "remove roles/NAME.toml and reload")
    offer_roles(p.add_argument("name", help="the role's name"))
