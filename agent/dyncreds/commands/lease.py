"""Lease commands: status, roles, creds, exec, revoke, renew."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any

from dyncreds import config
from dyncreds.client import EXIT_OK, EXIT_USAGE, Client
from dyncreds.commands.common import CliError, get_paths, print_json
from dyncreds.config import format_duration
from dyncreds.protocol import parse_rfc3339


def _ago(now: float, stamp: str | None) -> str:
    if not stamp:
        return "-"
    return format_duration(now - parse_rfc3339(stamp)) + " ago"


def _left(now: float, stamp: str | None) -> str:
    if not stamp:
        return "-"
    seconds = parse_rfc3339(stamp) - now
    return format_duration(seconds) if seconds > 0 else "expired"


def render_status(status: dict[str, Any], now: float | None = None, color: bool = False) -> str:
    now = time.time() if now is None else now
    agent, root = status["agent"], status["root"]
    bold = (lambda s: f"\033[1m{s}\033[0m") if color else (lambda s: s)
    red = (lambda s: f"\033[31m{s}\033[0m") if color else (lambda s: s)
    lines = [
        f"{bold('dyncreds')} {agent['version']}  agent {agent['id']}  pid {agent['pid']}  "
        f"up {format_duration(agent['uptime'])}",
        f"root: {root['arn'] or red('unknown: ' + str(root['error']))}  ({root['source']}, "
        f"{root['region']})",
    ]
    if agent.get("reload_error"):
        lines.append(red(f"last reload rejected: {agent['reload_error']}"))
    lines.append("")
    headers = ["ROLE", "TYPE", "STATE", "LEASE", "KEY", "AGE", "LEFT", "NEXT"]
    rows = []
    for role in status["roles"]:
        rows.append(
            [
                role["name"],
                role["type"],
                role["state"],
                role["lease_id"] or "-",
                role["access_key_id"] or "-",
                _ago(now, role["issued_at"]).replace(" ago", ""),
                _left(now, role["expires_at"]),
                role["next_action"],
            ]
        )
    if rows:
        widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
        lines.append("  ".join(bold(h.ljust(w)) for h, w in zip(headers, widths, strict=True)))
        for row in rows:
            lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    else:
        lines.append("no roles configured (add one with `dyncreds role create`)")
    for role in status["roles"]:
        if role["last_error"]:
            lines.append(red(f"  {role['name']}: last error: {role['last_error']}"))
    if status.get("retiring"):
        lines.append("")
        lines.append(bold("retiring leases (revoked at their announced expiry):"))
        for item in status["retiring"]:
            flag = red(" IRREVOCABLE") if item["irrevocable"] else ""
            error = f"  last error: {item['last_error']}" if item["last_error"] else ""
            lines.append(
                f"  {item['lease_id']}  {item['user_name']}  revoke in "
                f"{_left(now, item['revoke_at'])}{flag}{error}"
            )
    counters = status.get("counters") or {}
    if counters:
        lines.append("")
        lines.append("counters: " + "  ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    return "\n".join(lines)


def format_credentials(body: dict[str, Any], fmt: str, region: str | None, profile: str) -> str:
    creds = body["credentials"]
    if fmt == "json":
        return json.dumps({"credentials": creds, "lease": body["lease"]}, indent=2)
    if fmt == "credential-process":
        return json.dumps(creds)
    pairs = [
        ("AWS_ACCESS_KEY_ID", creds["AccessKeyId"]),
        ("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"]),
    ]
    if creds.get("SessionToken"):
        pairs.append(("AWS_SESSION_TOKEN", creds["SessionToken"]))
    pairs.append(("AWS_CREDENTIAL_EXPIRATION", creds["Expiration"]))
    if fmt == "env":
        if region:
            pairs += [("AWS_REGION", region), ("AWS_DEFAULT_REGION", region)]
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in pairs)
    # ini: a ~/.aws/credentials section
    keys = {
        "AWS_ACCESS_KEY_ID": "aws_access_key_id",
        "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
        "AWS_SESSION_TOKEN": "aws_session_token",
    }
    lines = [f"[{profile}]"] + [f"{keys[k]} = {v}" for k, v in pairs if k in keys]
    lines.append(f"# expires {creds['Expiration']}")
    if region:
        lines.append(f"region = {region}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        if args.watch and not args.json:
            try:
                while True:
                    status = client.request("status")
                    sys.stdout.write("\033[H\033[2J" + render_status(status, color=True) + "\n")
                    sys.stdout.flush()
                    time.sleep(args.interval)
            except KeyboardInterrupt:
                return EXIT_OK
        status = client.request("status")
        status.pop("ok", None)
        if args.json:
            print_json(status)
        else:
            print(render_status(status, color=sys.stdout.isatty()))
    return EXIT_OK


def cmd_roles(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        roles = client.request("roles")["roles"]
    if args.json:
        print_json(roles)
    else:
        for role in roles:
            print(f"{role['name']:24} {role['type']:17} ttl={format_duration(role['ttl'])}")
    return EXIT_OK


def cmd_creds(args: argparse.Namespace) -> int:
    p = get_paths(args)
    with Client(p.socket) as client:
        body = client.request("credentials", role=args.role)
    fmt = "json" if args.json else args.format
    print(format_credentials(body, fmt, _role_region(args), args.role))
    return EXIT_OK


def _role_region(args: argparse.Namespace) -> str | None:
    try:
        cfg = config.load(get_paths(args).config_dir)
    except config.ConfigError:
        return None
    role = cfg.roles.get(args.role)
    return (role.region if role else None) or cfg.main.root.region


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("usage: dyncreds exec ROLE -- CMD [ARG...]", EXIT_USAGE)
    with Client(get_paths(args).socket) as client:
        creds = client.request("credentials", role=args.role)["credentials"]
    env = dict(os.environ)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.pop(key, None)
    env["AWS_ACCESS_KEY_ID"] = creds["AccessKeyId"]
    env["AWS_SECRET_ACCESS_KEY"] = creds["SecretAccessKey"]
    if creds.get("SessionToken"):
        env["AWS_SESSION_TOKEN"] = creds["SessionToken"]
    env["AWS_CREDENTIAL_EXPIRATION"] = creds["Expiration"]
    region = _role_region(args)
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    env["DYNCREDS_ROLE"] = args.role
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        raise CliError(f"command not found: {command[0]}", 127) from None
    except PermissionError:
        raise CliError(f"cannot execute {command[0]}: permission denied", 126) from None


def cmd_revoke(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"force": args.force} if args.force else {}
    if args.all:
        fields["all"] = True
    elif args.role:
        fields["role"] = args.role
    elif args.lease_id:
        fields["lease_id"] = args.lease_id
    else:
        raise CliError("usage: dyncreds revoke LEASE_ID | --role ROLE | --all", EXIT_USAGE)
    with Client(get_paths(args).socket) as client:
        revoked = client.request("revoke", **fields)["revoked"]
    if args.json:
        print_json({"revoked": revoked})
    elif revoked:
        print("\n".join(f"revoked {lease}" for lease in revoked))
    else:
        print("nothing to revoke")
    return EXIT_OK


def cmd_renew(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        lease = client.request("renew", role=args.role)["lease"]
    if args.json:
        print_json(lease)
    else:
        print(f"{lease['id']} expires {lease['expires_at']}")
    return EXIT_OK


def add_commands(add: Any) -> None:
    p = add("status", cmd_status, "agent identity, root identity, each role's lease")
    p.add_argument("--watch", action="store_true", help="refresh in place")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    add("roles", cmd_roles, "configured roles and their types")
    p = add("creds", cmd_creds, "print credentials of the role's current lease ('Generate')")
    p.add_argument("role")
    p.add_argument(
        "--format",
        choices=["json", "env", "ini", "credential-process"],
        default="json",
        help="output format (default: json)",
    )
    p = add("exec", cmd_exec, "run a command with the role's credentials in its environment")
    p.add_argument("role")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = add("revoke", cmd_revoke, "revoke a lease, a role's leases, or all leases now")
    p.add_argument("lease_id", nargs="?")
    p.add_argument("--role", help="revoke every lease of this role")
    p.add_argument("--all", action="store_true", help="revoke every lease")
    p.add_argument(
        "--force",
        action="store_true",
        help="forget leases that cannot be revoked in AWS (they stay in AWS)",
    )
    p = add("renew", cmd_renew, "replace the role's lease now (new keys)")
    p.add_argument("role")
