"""Times and durations as text, both ways. Pure, and light (stdlib only): the
CLI's ``status`` uses it without loading the config's or the protocol's code.

Durations as config files and flags write them (``"90s"``, ``"1h30m"``, ``"2d"``
or integer seconds) and as people read them; instants as RFC 3339 UTC stamps
(``2026-11-29T12:00:00Z``), as the wire, the journal and AWS's SDKs write them.
"""

from __future__ import annotations

import re
import time

# Compiled on first use (re caches it): `status` never parses a duration. ASCII
# digits only (re.ASCII where it is used).
_DURATION = r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?"
# A common year's months (for parse_rfc3339): their days, and the days before each.
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAYS_BEFORE = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


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
        match = re.fullmatch(_DURATION, text, re.ASCII)
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
    """Seconds since the epoch -> ``2026-11-29T12:00:00Z``. With the builtin
    ``time`` (already loaded): a third of datetime's cost, and ``status`` makes
    three per role (the same text for every instant: tests/test_timefmt.py)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def parse_rfc3339(text: str) -> float:
    """The inverse of ``rfc3339`` (and any other form ``datetime.fromisoformat``
    reads). ``rfc3339``'s own form is read here, without datetime: ``status`` reads
    one per column, and importing datetime was a twentieth of its start-up (an
    equal answer for every instant: tests/test_timefmt.py)."""
    if (
        len(text) == 20
        and text.isascii()
        and text[4] + text[7] + text[10] + text[13] + text[16] + text[19] == "--T::Z"
        and (text[:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16] + text[17:19]).isdigit()
    ):
        year, month, day = int(text[:4]), int(text[5:7]), int(text[8:10])
        hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
        if year and 1 <= month <= 12 and hour < 24 and minute < 60 and second < 60:
            leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
            if 1 <= day <= (29 if month == 2 and leap else _MONTH_DAYS[month - 1]):
                days = _days_since_epoch(year, month, day, leap)
                return float(days * 86400 + hour * 3600 + minute * 60 + second)
    from datetime import datetime  # any other form (and every error): datetime's

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _days_since_epoch(year: int, month: int, day: int, leap: bool) -> int:
    """Days from 1970-01-01 to this proleptic Gregorian date."""
    before = year - 1
    days = before * 365 + before // 4 - before // 100 + before // 400  # since 0001-01-01
    days += _DAYS_BEFORE[month - 1] + (1 if leap and month > 2 else 0) + day - 1
    return days - 719162  # 0001-01-01 to 1970-01-01
