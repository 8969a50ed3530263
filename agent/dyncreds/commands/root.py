"""Root commands: ``init``, ``configure root`` (Vault's config/root) and
``rotate-root``. The root key file is written with aws/rootkeys.py, which does
not import boto3."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from dyncreds import config
from dyncreds.aws.rootkeys import StaticKeys, write_credentials_file
from dyncreds.client import EXIT_OK, Client
from dyncreds.commands.common import get_paths, print_json
from dyncreds.commands.roles import reload_agent
from dyncreds.files import atomic_write
from dyncreds.leases import Secret

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


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, text, mode)


def cmd_init(args: argparse.Namespace) -> int:
    p = get_paths(args)
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


def cmd_configure_root(args: argparse.Namespace) -> int:
    """Vault's config/root: the agent's own identity, region and endpoints."""
    p = get_paths(args)
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
    print(f"wrote {p.config_file}; {reload_agent(p)}")
    return 0


def _render_main(tables: dict[str, Any]) -> str:
    out = []
    for table in ("agent", "root", "lease"):
        values = tables.get(table)
        if not values:
            continue
        out.append(f"[{table}]")
        out.extend(f"{k} = {config.toml_value(v)}" for k, v in values.items())
        out.append("")
    return "\n".join(out)


def cmd_rotate_root(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        key = client.request("rotate_root")["access_key_id"]
    if args.json:
        print_json({"access_key_id": key})
    else:
        print(f"root rotated; new access key {key}")
    return EXIT_OK


def add_commands(add: Any, sub: Any, common: Any) -> None:
    p = add("init", cmd_init, "write a commented starter config.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.toml")
    p = sub.add_parser("configure", parents=[common], help="configure the root identity")
    configure = p.add_subparsers(dest="what", metavar="WHAT")
    configure.required = True
    p = configure.add_parser(
        "root",
        parents=[common],
        help="root AWS identity: a profile, or an access key whose secret "
        "is read from a prompt or stdin (never from the command line)",
    )
    p.add_argument("--profile", help="use this ~/.aws/config profile as the root")
    p.add_argument("--access-key-id", help="the root's access key id")
    p.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the secret access key from the first line of stdin",
    )
    p.add_argument("--region", help="the root's region")
    p.add_argument("--iam-endpoint", dest="iam_endpoint", help="IAM endpoint URL")
    p.add_argument("--sts-endpoint", dest="sts_endpoint", help="STS endpoint URL")
    p.set_defaults(fn=cmd_configure_root)
    add("rotate-root", cmd_rotate_root, "rotate the agent's own static access key")
