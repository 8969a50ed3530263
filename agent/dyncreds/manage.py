"""The seed's flow on the command line: ``init``, ``configure root`` and
``role create|list|show|delete``.

Every file is validated before it is written (a role is written to a temp file,
loaded with the same code the agent uses, and only then renamed into place), so
these commands never leave a configuration the agent would refuse. After a
change, a running agent is asked to reload; if none runs, that is fine.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from dyncreds import config, paths
from dyncreds.files import atomic_write

STARTER_CONFIG = """\
# dyncreds configuration. Every key is optional; these are the defaults.
# Durations: "90s", "15m", "1h", "1h30m", or integer seconds.

[agent]
# log_level = "info"          # debug | info | warning | error
# min_remaining = "20m"       # a served credential has at least this long to live
# idle_after = "1h"           # stop refreshing a role nobody asked for in this long
# aws_concurrency = 8         # AWS calls in flight at once
# propagation_checks = 3      # a new IAM key must work this many times in a row
# propagation_timeout = "60s"

[root]
# The agent's own AWS identity (Vault: config/root). One of:
# profile = "dyncreds-root"                    # a profile of ~/.aws/config
# credentials_file = "root-credentials.toml"   # written by `dyncreds configure root`
# neither: boto3's default credential chain
region = "us-east-1"
# iam_endpoint = "https://iam.amazonaws.com"
# sts_endpoint = "https://sts.us-east-1.amazonaws.com"
# max_retries = 5
# username_template = "dyncreds-{user}-{role}-{unix_time}-{random}"

[lease]
# Defaults for iam_user roles (Vault: config/lease).
# ttl = "1h"
# max_ttl = "12h"
"""


def _paths(args: argparse.Namespace) -> paths.Paths:
    return paths.resolve(args.config_dir, args.state_dir, args.socket)


def _reload_agent(p: paths.Paths) -> str:
    from dyncreds.cli import Client, CliError

    try:
        with Client(p.socket, timeout=30) as client:
            roles = client.request("reload")["roles"]
        return f"agent reloaded ({len(roles)} roles)"
    except CliError as exc:
        if exc.status == 3:
            return "agent not running; it will read the change when it starts"
        return f"agent did not reload: {exc}"


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, text, mode)


# --------------------------------------------------------------------------- init


def cmd_init(args: argparse.Namespace) -> int:
    p = _paths(args)
    if p.config_file.exists() and not args.force:
        print(f"dyncreds: {p.config_file} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    _write_private(p.config_file, STARTER_CONFIG, 0o644)
    p.roles_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"wrote {p.config_file}; next: `dyncreds configure root`, then "
        f"`dyncreds role create NAME --type iam_user --policy-file policy.json`"
    )
    return 0


# --------------------------------------------------------------------------- configure root


def cmd_configure_root(args: argparse.Namespace) -> int:
    """Vault's config/root: the agent's own identity, region and endpoints."""
    import tomllib

    p = _paths(args)
    current: dict[str, Any] = {}
    if p.config_file.exists():
        current = tomllib.loads(p.config_file.read_text())
    root: dict[str, Any] = dict(current.get("root", {}))
    if args.profile:
        root["profile"] = args.profile
        root.pop("credentials_file", None)
    else:
        key_id = args.access_key_id or os.environ.get("DYNCREDS_ROOT_ACCESS_KEY_ID")
        if args.secret_stdin:
            if not key_id:
                print("dyncreds: --secret-stdin needs --access-key-id", file=sys.stderr)
                return 2
            secret = sys.stdin.readline().strip()
        else:
            if not sys.stdin.isatty():
                print(
                    "dyncreds: no terminal to prompt on; pass --access-key-id and pipe the "
                    "secret with --secret-stdin",
                    file=sys.stderr,
                )
                return 2
            key_id = key_id or input("AWS access key id: ").strip()
            secret = getpass.getpass("AWS secret access key (not echoed): ").strip()
        if not key_id or not secret:
            print("dyncreds: both the access key id and the secret are required", file=sys.stderr)
            return 2
        name = root.get("credentials_file") or "root-credentials.toml"
        creds_path = p.config_dir / name
        from dyncreds.aws.session import StaticKeys, write_credentials_file
        from dyncreds.leases import Secret

        p.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_credentials_file(creds_path, StaticKeys(key_id, Secret(secret)))
        root["credentials_file"] = name
        root.pop("profile", None)
        print(f"wrote {creds_path} (mode 0600)")
    for key in ("region", "iam_endpoint", "sts_endpoint"):
        value = getattr(args, key)
        if value:
            root[key] = value
    current["root"] = root
    text = _render_main(current)
    problems: list[config.Problem] = []
    tmp = p.config_file.with_name(".config.toml.check")
    p.config_dir.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text)
    try:
        config.load_main(tmp, problems)
    finally:
        tmp.unlink()
    if problems:
        for problem in problems:
            print(str(problem).replace(str(tmp), str(p.config_file)), file=sys.stderr)
        return 2
    _write_private(p.config_file, text, 0o644)
    print(f"wrote {p.config_file}; {_reload_agent(p)}")
    return 0


def _render_main(tables: dict[str, Any]) -> str:
    out = []
    for table in ("agent", "root", "lease"):
        values = tables.get(table)
        if not values:
            continue
        out.append(f"[{table}]")
        out.extend(f"{k} = {config._toml_value(v)}" for k, v in values.items())
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- roles


def cmd_role_create(args: argparse.Namespace) -> int:
    p = _paths(args)
    name = args.name
    if not config.ROLE_NAME.fullmatch(name):
        print(
            f"dyncreds: role name {name!r} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}",
            file=sys.stderr,
        )
        return 2
    target = p.role_file(name)
    if target.exists() and not args.force:
        print(
            f"dyncreds: role {name} exists ({target}); use --force to replace it", file=sys.stderr
        )
        return 2
    spec: dict[str, Any] = {"credential_type": args.type}
    if args.policy_file == "-":
        spec["policy_document"] = sys.stdin.read()
    elif args.policy_file:
        policy_path = Path(args.policy_file)
        try:
            spec["policy_document"] = policy_path.read_text()
        except OSError as exc:
            print(f"dyncreds: {policy_path}: {exc.strerror}", file=sys.stderr)
            return 2
    if args.policy_document:
        spec["policy_document"] = args.policy_document
    if "policy_document" in spec:
        try:  # stored compact and validated below
            spec["policy_document"] = json.dumps(json.loads(spec["policy_document"]), indent=2)
        except ValueError as exc:
            print(f"dyncreds: policy is not valid JSON: {exc}", file=sys.stderr)
            return 2
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
            print(f"dyncreds: --tag wants KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        tags[key] = value
    if tags:
        spec["iam_tags" if args.type == "iam_user" else "session_tags"] = tags
    text = config.render_role_toml(spec)
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
            return 2
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
        staging_dir.rmdir()
    print(f"wrote {target}; {_reload_agent(p)}")
    return 0


def cmd_role_list(args: argparse.Namespace) -> int:
    p = _paths(args)
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
    p = _paths(args)
    path = p.role_file(args.name)
    if not path.exists():
        print(f"dyncreds: no role {args.name!r} in {p.roles_dir}", file=sys.stderr)
        return 2
    print(path.read_text(), end="")
    return 0


def cmd_role_delete(args: argparse.Namespace) -> int:
    p = _paths(args)
    path = p.role_file(args.name)
    if not path.exists():
        print(f"dyncreds: no role {args.name!r} in {p.roles_dir}", file=sys.stderr)
        return 2
    path.unlink()
    print(f"removed {path}; {_reload_agent(p)}")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="write a commented starter config.toml")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=cmd_init)

    p = sub.add_parser("configure", parents=[common], help="configure the root identity")
    configure = p.add_subparsers(dest="what", metavar="WHAT")
    configure.required = True
    p = configure.add_parser(
        "root",
        parents=[common],
        help="root AWS identity: a profile, or an access key whose secret "
        "is read from a prompt or stdin (never from the command line)",
    )
    p.add_argument("--profile")
    p.add_argument("--access-key-id")
    p.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the secret access key from the first line of stdin",
    )
    p.add_argument("--region")
    p.add_argument("--iam-endpoint", dest="iam_endpoint")
    p.add_argument("--sts-endpoint", dest="sts_endpoint")
    p.set_defaults(fn=cmd_configure_root)

    p = sub.add_parser("role", parents=[common], help="create, list, show or delete roles")
    roles = p.add_subparsers(dest="action", metavar="ACTION")
    roles.required = True
    p = roles.add_parser("create", parents=[common], help="write roles/NAME.toml and reload")
    p.add_argument("name")
    p.add_argument("--type", required=True, choices=list(config.CREDENTIAL_TYPES))
    p.add_argument("--policy-file", help="policy JSON file, or - for stdin")
    p.add_argument("--policy-document", help="policy JSON inline")
    p.add_argument("--policy-arn", action="append")
    p.add_argument("--iam-group", action="append")
    p.add_argument("--role-arn", action="append")
    p.add_argument("--external-id")
    p.add_argument("--ttl")
    p.add_argument("--max-ttl", dest="max_ttl")
    p.add_argument("--user-path", dest="user_path")
    p.add_argument("--permissions-boundary-arn", dest="permissions_boundary_arn")
    p.add_argument("--region")
    p.add_argument("--tag", action="append", help="KEY=VALUE (iam_tags or session_tags)")
    p.add_argument("--prefetch", action="store_true")
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
