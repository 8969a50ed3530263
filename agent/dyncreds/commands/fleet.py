"""`fleet init` (create the table, here, with the root's credentials) and
`fleet status` (the whole fleet, as the running agent reads it from the table; on
a machine without an agent, read here with the root's or a profile's credentials)."""

from __future__ import annotations

import argparse
import sys
import time

from dyncreds.client import (
    EXIT_AGENT_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    Client,
    CliError,
)
from dyncreds.commands.common import Commands, get_paths, load, print_json

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from typing import Any

    from dyncreds import config


def cmd_fleet_init(args: argparse.Namespace) -> int:
    cfg = load(args)
    fleet = cfg.main.fleet
    if fleet is None:
        raise CliError(
            "config.toml has no [fleet] table: add one (table, name, region) first", EXIT_USAGE
        )
    # boto3 only for this command, and only now: the CLI starts without it.
    from dyncreds.aws.errors import map_errors
    from dyncreds.aws.fleet_table import create_table
    from dyncreds.aws.session import AwsSession
    from dyncreds.protocol import DyncredsError

    try:
        aws = AwsSession(cfg, call_timeout=20.0, concurrency=1)
        with map_errors("CreateTable"):
            created = create_table(aws.dynamodb, fleet.table)
    except DyncredsError as exc:
        raise CliError(f"{exc.message}; nothing was created", EXIT_USAGE) from None
    result = {"table": fleet.table, "region": fleet.region, "created": created}
    if args.json:
        print_json(result)
    elif created:
        print(f"created the fleet table {fleet.table} in {fleet.region} (on-demand, TTL on)")
    else:
        print(f"the fleet table {fleet.table} in {fleet.region} is ready (it existed; TTL on)")
    return EXIT_OK


def cmd_fleet_status(args: argparse.Namespace) -> int:
    """The fleet as the local agent reads it; or, on an admin machine with no agent
    (or with --profile / --direct), read from the table here."""
    status: dict[str, Any] | None = None
    if not (args.profile or args.direct):
        try:
            with Client(get_paths(args).socket) as client:
                status = client.request("fleet_status")
        except CliError as exc:
            if exc.status != EXIT_NOT_RUNNING:
                raise
            print("dyncreds: no agent here; reading the fleet table directly", file=sys.stderr)
    if status is None:
        status = read_table(load(args), args.profile)
    status.pop("ok", None)
    if args.json:
        print_json(status)
    else:
        print(render_fleet(status, time.time()))
    return EXIT_OK


def read_table(cfg: config.Config, profile: str | None) -> dict[str, Any]:
    """`fleet status` without an agent: the table read with the root's credentials
    (config.toml's [root]), or a profile's of ~/.aws/config."""
    import dataclasses

    import msgspec

    from dyncreds.protocol import DyncredsError

    fleet = cfg.main.fleet
    if fleet is None:
        raise CliError(
            "config.toml has no [fleet] table: add the fleet's (table, name, region) to read it",
            EXIT_USAGE,
        )
    if profile:
        root = msgspec.structs.replace(
            cfg.main.root,
            profile=profile,
            credentials_file=None,
            keyring=None,
            systemd_credential=None,
            mfa_serial=None,
        )
        cfg = dataclasses.replace(cfg, main=msgspec.structs.replace(cfg.main, root=root))
    # boto3 and trio only for this: the CLI starts without them.
    import trio

    from dyncreds.aws.fleet_table import FleetTable
    from dyncreds.aws.session import AwsSession
    from dyncreds.fleet import fleet_view

    try:
        aws = AwsSession(cfg, call_timeout=20.0, concurrency=1)
        table = FleetTable(fleet, lambda: aws)
        return trio.run(fleet_view, table, fleet, time.time(), None)
    except DyncredsError as exc:
        raise CliError(exc.message, EXIT_AGENT_ERROR) from None


def render_fleet(status: dict[str, Any], now: float) -> str:
    from dyncreds.commands.render import relative

    lines = [
        f"fleet {status['name']}  table {status['table']}  "
        f"(an agent whose heartbeat stays unchanged {status['dead_after']}s is dead)",
        "",
    ]
    header = ("AGENT", "HOST", "PID", "STATE", "SILENT", "SKEW", "LEASES", "TAKEN OVER BY")
    rows = [header]
    for agent in status["agents"]:
        state = "alive" if agent["alive"] else "dead"
        taken = (agent["taken_over_by"] or "-")[:16]
        if agent.get("takeover_unfinished"):
            taken += " (unfinished)"
        skew = agent.get("skew")
        rows.append(
            (
                agent["id"][:16] + (" *" if agent["me"] else ""),
                agent["host"][:20],
                str(agent["pid"]),
                state,
                f"{agent['silent_for']}s",
                "?" if skew is None else f"{skew:+.0f}s",
                str(agent["leases"]),
                taken,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for bad in status.get("bad_items", []):
        lines.append(f"skipped a bad item {bad['item']}: {bad['error']}")
    pending = status["pending"]
    lines.append("")
    lines.append(f"{len(pending)} IAM users or keys tracked (* = this agent)")
    for record in pending[:50]:
        lines.append(
            f"  {record['lease_id']}  {record['user']}  owner {record['owner'][:16]}  "
            f"{record['state']}  revoke {relative(now, record['revoke_at'])}"
            + (f"  ({record['last_error']})" if record.get("last_error") else "")
        )
    return "\n".join(lines)


def add_commands(cli: Commands) -> None:
    fleet = cli.group("fleet", "the fleet's DynamoDB table: create it, or show it", "WHAT")
    fleet.add(
        "init",
        cmd_fleet_init,
        "create the fleet table (on-demand, TTL) with the root's credentials; idempotent",
    )
    p = fleet.add(
        "status", cmd_fleet_status, "every agent of the fleet, alive or dead, and its leases"
    )
    p.add_argument(
        "--profile",
        help="read the table here with this ~/.aws/config profile (no agent needed)",
    )
    p.add_argument(
        "--direct",
        action="store_true",
        help="read the table here with the root's credentials, even if an agent runs",
    )
