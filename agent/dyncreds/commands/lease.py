"""Lease commands: status, creds, revoke, renew, rotate - each one request to the
agent (``exec`` and ``serve`` are endpoint.py's)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from dyncreds.client import EXIT_OK, EXIT_USAGE, Client, CliError
from dyncreds.commands.common import Commands, get_paths, get_socket, print_json
from dyncreds.commands.completion import offer_leases, offer_roles

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    import threading
    from pathlib import Path
    from typing import Any

SPINNER = "|/-\\"


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
        import shlex

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
    from dyncreds.commands import imds
    from dyncreds.commands.render import render_status, terminal_width, use_colour

    socket = get_socket(args)
    if args.watch and not args.json:
        return _watch(socket, args.interval)
    with Client(socket) as client:
        status = client.request("status")
    status.pop("ok", None)
    if warning := imds.status_warning(status):  # the host's door around the agent
        status["root"]["warning"] = "; ".join(filter(None, (status["root"]["warning"], warning)))
    if args.json:
        print_json(status)
    else:
        print(
            render_status(
                status, time.time(), colour=use_colour(sys.stdout), width=terminal_width()
            )
        )
    return EXIT_OK


def _watch(socket: str, interval: float) -> int:
    """Refresh in place until Ctrl-C; an agent that stops or restarts is shown as
    such, and watched again when it is back."""
    from dyncreds.commands.render import render_status, terminal_width, use_colour

    client: Client | None = None
    try:
        while True:
            try:
                client = client or Client(socket, timeout=10)
                status = client.request("status")
                screen = render_status(
                    status, time.time(), colour=use_colour(sys.stdout), width=terminal_width()
                )
            except CliError as exc:
                if client is not None:
                    client.close()
                client = None
                screen = f"agent not running: {exc}\n(waiting for it; Ctrl-C to stop)"
            sys.stdout.write("\033[H\033[2J" + screen + "\n")
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if client is not None:
            client.close()


class Progress:
    """While a request waits for a cold issuance, show what the agent is doing
    (create_user, grant, propagate ...) on stderr - only on a terminal. (A class,
    not contextlib's decorator: importing contextlib costs every command's start.)"""

    def __init__(self, socket: Path | str, role: str) -> None:
        self.socket, self.role = socket, role
        self._done: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> None:
        if not sys.stderr.isatty():
            return
        import threading

        self._done = threading.Event()
        self._thread = threading.Thread(target=self._show, args=(self._done,), daemon=True)
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        if self._done is not None and self._thread is not None:
            self._done.set()
            self._thread.join(timeout=2)

    def _show(self, done: threading.Event) -> None:
        shown = False
        ticks = 0
        with Client(self.socket, timeout=5) as watcher:
            while not done.wait(0.2 if shown else 0.5):
                try:
                    roles = watcher.request("status")["roles"]
                except CliError:
                    return
                step = next((r["next_action"] for r in roles if r["name"] == self.role), "")
                if not step.startswith(("issuing", "refreshing")):
                    continue
                ticks += 1
                sys.stderr.write(f"\r{SPINNER[ticks % 4]} {self.role}: {step}\033[K")
                sys.stderr.flush()
                shown = True
        if shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def fetch_credentials(args: argparse.Namespace) -> dict[str, Any]:
    socket = get_paths(args).socket
    with Client(socket) as client, Progress(socket, args.role):
        return client.request("credentials", role=args.role)


def cmd_creds(args: argparse.Namespace) -> int:
    body = fetch_credentials(args)
    fmt = "json" if args.json else args.format
    print(format_credentials(body, fmt, role_region(args), args.role))
    return EXIT_OK


def role_region(args: argparse.Namespace) -> str | None:
    from dyncreds import config

    try:
        cfg = config.load(get_paths(args).config_dir)
    except config.ConfigError:
        return None
    role = cfg.roles.get(args.role)
    return (role.region if role else None) or cfg.main.root.region


def exec_env(role: str, creds: dict[str, Any], region: str | None) -> dict[str, str]:
    """The child's environment: the role's keys and region, no other AWS identity,
    and DYNCREDS_ROLE as a marker (for prompts, and to see where keys came from)."""
    env = dict(os.environ)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.pop(key, None)
    env["AWS_ACCESS_KEY_ID"] = creds["AccessKeyId"]
    env["AWS_SECRET_ACCESS_KEY"] = creds["SecretAccessKey"]
    if creds.get("SessionToken"):
        env["AWS_SESSION_TOKEN"] = creds["SessionToken"]
    env["AWS_CREDENTIAL_EXPIRATION"] = creds["Expiration"]
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    env["DYNCREDS_ROLE"] = role
    return env


def cmd_revoke(args: argparse.Namespace) -> int:
    chosen = [
        flag
        for flag, given in (("LEASE_ID", args.lease_id), ("--role", args.role), ("--all", args.all))
        if given
    ]
    if len(chosen) != 1:
        raise CliError(
            "revoke takes exactly one of LEASE_ID, --role ROLE or --all"
            + (f" (got {' and '.join(chosen)})" if chosen else ""),
            EXIT_USAGE,
        )
    fields: dict[str, Any] = {"force": True} if args.force else {}
    if args.all:
        fields["all"] = True
    elif args.role:
        fields["role"] = args.role
    else:
        fields["lease_id"] = args.lease_id
    with Client(get_paths(args).socket) as client:
        body = client.request("revoke", **fields)
    results = body.get("results") or [
        {"lease_id": x, "outcome": "revoked"} for x in body["revoked"]
    ]
    if args.json:
        print_json({"revoked": body["revoked"], "results": results})
    elif results:
        # Exactly what happened to each: deleted, denied from T, or valid until T.
        print("\n".join(f"{r['lease_id']}: {r['outcome']}" for r in results))
    else:
        print("nothing to revoke")
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    """A static user's key rotation, now (the ``rotate`` op; otherwise as renew)."""
    return cmd_renew(args, op="rotate")


def cmd_renew(args: argparse.Namespace, op: str = "renew") -> int:
    socket = get_paths(args).socket
    with Client(socket) as client:
        with Progress(socket, args.role):
            body = client.request(op, role=args.role)
        old = body.get("replaced")
        if old and args.revoke_old:
            client.request("revoke", lease_id=old["id"])
    lease = body["lease"]
    if args.json:
        print_json({"lease": lease, "replaced": old, "old_revoked": bool(old and args.revoke_old)})
        return EXIT_OK
    print(f"new keys: lease {lease['id']}, valid until {lease['expires_at']}")
    if old and args.revoke_old:
        print(f"the old lease {old['id']} was revoked: its keys no longer work")
    elif old:
        print(
            f"the old keys (lease {old['id']}) stay valid until {old['expires_at']}, as "
            f"announced; to kill them now: dyncreds revoke {old['id']}"
        )
    return EXIT_OK


def add_commands(cli: Commands) -> None:
    p = cli.add("status", cmd_status, "agent identity, root identity, each role's lease")
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p = cli.add("creds", cmd_creds, "print credentials of the role's current lease ('Generate')")
    offer_roles(p.add_argument("role", help="the role's name"))
    p.add_argument(
        "--format",
        choices=["json", "env", "ini", "credential-process"],
        default="json",
        help="output format (default: json)",
    )
    p = cli.add("revoke", cmd_revoke, "revoke a lease, a role's leases, or all leases now")
    offer_leases(
        p.add_argument("lease_id", nargs="?", help="the lease to revoke (see `dyncreds status`)")
    )
    offer_roles(p.add_argument("--role", help="revoke every lease of this role"))
    p.add_argument("--all", action="store_true", help="revoke every lease")
    p.add_argument(
        "--force",
        action="store_true",
        help="forget leases that cannot be revoked in AWS (they stay in AWS)",
    )
    p = cli.add("rotate", cmd_rotate, "rotate a static_user role's access key now")
    offer_roles(p.add_argument("role", help="the static_user role's name"))
    p.add_argument(
        "--revoke-old",
        action="store_true",
        help="delete the old key at once instead of at the expiry it announced",
    )
    p = cli.add("renew", cmd_renew, "replace the role's lease now (new keys)")
    offer_roles(p.add_argument("role", help="the role's name"))
    p.add_argument(
        "--revoke-old",
        action="store_true",
        help="revoke the replaced lease at once (after a leak) instead of at its expiry",
    )
