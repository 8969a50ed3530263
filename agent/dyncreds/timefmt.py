"""Times and durations as text, both ways. Pure, and light (stdlib only): the
CLI's ``status`` uses it without loading the config's or the protocol's code.

Durations as config files and flags write them (``"90s"``, ``"1h30m"``, ``"2d"``
or integer seconds) and as people read them; instants as RFC 3339 UTC stamps
(``2026-11-29T12:00:00Z``), as the wire, the journal and AWS's SDKs write them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", re.ASCII)


def parse_duration(value: object) -> int:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"`` or integer seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "15m" or integer seconds, got a boolean')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _DURATION.fullmatch(text)
        if text and match and any(match.groups()):
            days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
            return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        if text.isascii() and text.isdigit():
            return int(text)
    raise ValueError(f'expected a duration like "15m", "1h30m" or integer seconds, got {value!r}')


def format_duration(seconds: float) -> str:
    """The inverse, for humans: 5400 -> "1h30m"."""
    total = int(seconds)
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, total = divmod(total, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts[:2])


def rfc3339(epoch: float) -> str:
    """Seconds since the epoch -> ``2026-11-29T12:00:00Z``."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
