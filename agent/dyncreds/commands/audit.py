"""``dyncreds audit``: who asked for what, read from the audit log."""

from __future__ import annotations

import argparse
import time

from dyncreds.client import EXIT_OK, EXIT_USAGE, CliError
from dyncreds.commands.common import Commands, get_paths, load, print_json
from dyncreds.commands.completion import offer_roles

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from typing import Any


def cmd_audit(args: argparse.Namespace) -> int:
    from dyncreds import audit, config  # the audit log's writer side needs trio

    cfg = load(args)
    if not cfg.main.audit.file:
        raise CliError('the audit log is off ([audit] file = "" in config.toml)', EXIT_USAGE)
    path = get_paths(args).state_dir / cfg.main.audit.file
    since = 0.0
    if args.since:
        try:
            since = time.time() - config.parse_duration(args.since)
        except ValueError as exc:
            raise CliError(f"--since: {exc}", EXIT_USAGE) from None
    entries = [
        e
        for e in audit.read(path)
        if (not args.role or e.get("role") == args.role) and audit.entry_time(e) >= since
    ]
    if args.json:
        print_json(entries)
        return EXIT_OK
    if not entries:
        print(f"no entries in {path}" + (" for that filter" if args.role or args.since else ""))
        return EXIT_OK
    for e in entries:
        peer: dict[str, Any] = e.get("peer") or {}
        who = f"pid {peer.get('pid', '?')} {peer.get('exe') or '?'}"
        what = " ".join(str(e[k]) for k in ("role", "lease_id", "access_key_id") if e.get(k))
        print(
            f"{e.get('time', '?')}  {e.get('op', '?'):18} {e.get('outcome', '?'):12} {what}  {who}"
        )
    return EXIT_OK


def add_commands(cli: Commands) -> None:
    p = cli.add("audit", cmd_audit, "who asked for which credentials, from the audit log")
    offer_roles(p.add_argument("--role", help="only this role"))
    p.add_argument("--since", help='only this recent, e.g. "1h"')
