"""How the CLI shows things to people: ``status`` as a table that fits the
terminal, times relative to now, colour only on a terminal that wants it."""

from __future__ import annotations

import os
import re
import sys
import textwrap

from dyncreds.timefmt import format_duration, parse_rfc3339

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO

    Paint = Callable[[str, str], str]

STAMP = re.compile(r"(?:\bat )?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")
BACKTICKED = re.compile(r"`[^`]*`")
NBSP = "\u00a0"  # not a break for textwrap: glues a `command` into one word
STATE_COLOURS = {"ready": "32", "issuing": "33", "refreshing": "33", "idle": "2"}


def use_colour(stream: TextIO) -> bool:
    """Colour on a terminal, unless NO_COLOR (no-color.org) or TERM=dumb says not."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


def painter(colour: bool) -> Paint:
    if not colour:
        return lambda text, code: text
    return lambda text, code: f"\033[{code}m{text}\033[0m"


def relative(now: float, stamp: str | None) -> str:
    """``in 33m``, ``2m ago``; ``-`` for nothing."""
    if not stamp:
        return "-"
    seconds = parse_rfc3339(stamp) - now
    if abs(seconds) < 1:
        return "now"
    text = format_duration(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


def left(now: float, stamp: str | None) -> str:
    """What remains of a lease: ``33m``, or ``expired 2m ago``."""
    if not stamp:
        return "-"
    seconds = parse_rfc3339(stamp) - now
    if seconds > 0:
        return format_duration(seconds)
    return f"expired {format_duration(-seconds)} ago" if seconds < -1 else "expired"


def relative_times(now: float, text: str) -> str:
    """Every RFC 3339 time in a sentence, made relative: "extend at T" -> "extend in 33m"."""
    return STAMP.sub(lambda m: relative(now, m.group(1)), text)


# The columns in the order they are dropped when the terminal is narrow.
COLUMNS = ["ROLE", "TYPE", "STATE", "LEASE", "KEY", "AGE", "LEFT", "NEXT"]
DROP_ORDER = ["LEASE", "AGE", "KEY", "TYPE"]


def _row(role: dict[str, Any], now: float) -> dict[str, str]:
    issued = role["issued_at"]
    consumer = role.get("consumer")  # system mode: whose lease this line is
    return {
        "ROLE": f"{role['name']} ({consumer})" if consumer else role["name"],
        "TYPE": role["type"],
        "STATE": role["state"],
        "LEASE": role["lease_id"] or "-",
        "KEY": role["access_key_id"] or "-",
        "AGE": relative(now, issued).removesuffix(" ago") if issued else "-",
        "LEFT": left(now, role["expires_at"]),
        "NEXT": relative_times(now, role["next_action"]),
    }


def _fit(rows: list[dict[str, str]], width: int) -> tuple[list[str], dict[str, int]]:
    columns = list(COLUMNS)

    def widths() -> dict[str, int]:
        return {c: max([len(c)] + [len(r[c]) for r in rows]) for c in columns}

    def total(w: dict[str, int]) -> int:
        return sum(w.values()) + 2 * (len(w) - 1)

    for dropped in DROP_ORDER:
        if total(widths()) <= width:
            break
        columns.remove(dropped)
    sized = widths()
    overflow = total(sized) - width
    if overflow > 0:  # the sentence column gives way last, cut with an ellipsis
        sized["NEXT"] = max(len("NEXT"), sized["NEXT"] - overflow)
    return columns, sized


def _cell(text: str, size: int) -> str:
    return text if len(text) <= size else text[: max(size - 1, 0)] + "…"


def wrap(text: str, width: int, paint: Paint | None = None, code: str = "0") -> list[str]:
    """A sentence in lines of ``width``, continued with an indent: never cut (the
    fix a warning offers is often its last words), and never broken inside a word
    or a `command` (a word longer than the line gets a line of its own)."""
    glued = BACKTICKED.sub(lambda m: m.group(0).replace(" ", NBSP), text)
    lines = textwrap.wrap(
        glued,
        max(width, 20),
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    ) or [""]
    lines = [line.replace(NBSP, " ") for line in lines]
    return [paint(line, code) for line in lines] if paint else lines


def _root_lines(root: dict[str, Any], paint: Any, width: int) -> list[str]:
    """The root's lock, rotation schedule, error and warning: only what is there."""
    lines = []
    if root.get("locked"):
        how = "by `dyncreds lock`" if root.get("locked_by_user") else "(MFA)"
        lines += wrap(f"root locked {how}: run `dyncreds unlock`", width, paint, "33")
    elif root.get("unlocked_until"):
        lines.append(f"root unlocked until {root['unlocked_until']}")
    if root.get("next_rotation"):
        lines.append(f"next root rotation {root['next_rotation']}")
    if root.get("rotation_error"):
        lines += wrap(f"root rotation failed: {root['rotation_error']}", width, paint, "31")
    if root.get("error"):
        lines += wrap(f"root error: {root['error']}", width, paint, "31")
    if root.get("warning"):
        lines += wrap(f"warning: {root['warning']}", width, paint, "33")
    return lines


def _fleet_lines(fleet: dict[str, Any] | None, paint: Paint, width: int) -> list[str]:
    """The fleet this agent is in: table, its clock's skew against AWS's, trouble."""
    if not fleet:
        return []
    skew = fleet.get("skew")
    said = "unknown" if skew is None else f"{skew:+.1f}s"
    lines = wrap(f"fleet: {fleet['name']} (table {fleet['table']})  clock vs AWS {said}", width)
    if fleet.get("error"):
        lines += wrap(f"fleet: {fleet['error']}", width, paint, "31")
    elif fleet.get("skew_warning"):
        lines += wrap(f"fleet: {fleet['skew_warning']}", width, paint, "33")
    return lines


def render_status(
    status: dict[str, Any], now: float, *, colour: bool = False, width: int = 80
) -> str:
    paint = painter(colour)
    agent, root = status["agent"], status["root"]
    lines = [
        _cell(
            f"{paint('dyncreds', '1')} {agent['version']}  agent {agent['id']}  "
            f"pid {agent['pid']}  up {format_duration(agent['uptime'])}",
            width + (8 if colour else 0),
        ),
    ]
    lines += wrap(f"root: {root['arn'] or 'unknown'}  ({root['source']}, {root['region']})", width)
    lines.extend(_root_lines(root, paint, width))
    if agent.get("reload_error"):
        lines += wrap(f"last reload rejected: {agent['reload_error']}", width, paint, "31")
    lines.extend(_fleet_lines(status.get("fleet"), paint, width))
    lines.append("")
    rows = [_row(role, now) for role in status["roles"]]
    if not rows:
        lines.append("no roles configured (add one with `dyncreds role create`)")
    else:
        columns, sized = _fit(rows, width)
        lines.append("  ".join(paint(c.ljust(sized[c]), "1") for c in columns).rstrip())
        for row in rows:
            cells = []
            for c in columns:
                cell = _cell(row[c], sized[c]).ljust(sized[c])
                if c == "STATE":
                    cell = paint(cell, STATE_COLOURS.get(row[c], "0"))
                cells.append(cell)
            lines.append("  ".join(cells).rstrip())
    for role in status["roles"]:
        if role["last_error"]:
            lines += wrap(f"{role['name']}: last error: {role['last_error']}", width, paint, "31")
    lines += _retiring(status.get("retiring") or [], now, paint, width)
    counters = status.get("counters") or {}
    if counters:
        lines.append("")
        lines.append("counters: " + "  ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    return "\n".join(lines)


def _retiring(items: list[dict[str, Any]], now: float, paint: Paint, width: int) -> list[str]:
    if not items:
        return []
    lines = ["", paint("retiring leases (revoked at the expiry they announced):", "1")]
    for item in items:
        when = relative(now, item["revoke_at"])
        verb = "revoke" if not when.endswith("ago") else "revoking, due"
        flag = paint(" IRREVOCABLE", "31") if item["irrevocable"] else ""
        lines.append(f"  {item['lease_id']}  {item['user_name']}  {verb} {when}{flag}")
        if item["last_error"]:
            lines += wrap(f"    last error: {item['last_error']}", width, paint, "31")
    return lines


def terminal_width(stream: TextIO = sys.stdout) -> int:
    """The terminal's width, or 80 when there is none (a pipe, a file)."""
    if not stream.isatty():
        return 80
    try:
        return max(40, os.get_terminal_size(stream.fileno()).columns)
    except OSError:
        return 80
