"""RFC 3339 stamps read and written without datetime (``status`` reads one per
column, and writes three per role): the same answer as datetime for every
instant, and the same refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dyncreds.timefmt import parse_rfc3339, rfc3339


def theirs(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_every_instant_reads_as_datetime_reads_it(moment: datetime) -> None:
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )
    assert parse_rfc3339(text) == theirs(text)


@given(st.integers(min_value=0, max_value=2**34))
def test_round_trip(epoch: int) -> None:
    assert parse_rfc3339(rfc3339(epoch)) == epoch


@given(st.floats(min_value=0, max_value=253402300799, allow_nan=False))
def test_every_instant_is_written_as_datetime_writes_it(epoch: float) -> None:
    """rfc3339 uses the builtin time module (status makes three per role)."""
    expected = datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert rfc3339(epoch) == expected


DIGITS = st.text(alphabet="0123456789", min_size=14, max_size=14)


@given(DIGITS)
def test_impossible_dates_are_refused_as_datetime_refuses_them(digits: str) -> None:
    """Month 13, February 30th, hour 24, second 60, year 0: datetime's error."""
    d = digits
    text = f"{d[:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}Z"
    try:
        expected = theirs(text)
    except ValueError:
        with pytest.raises(ValueError):
            parse_rfc3339(text)
    else:
        assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2026-11-29T12:00:00+00:00", "2026-11-29T12:00:00.5Z", "2026-11-29 12:00:00Z"],
)
def test_other_forms_go_to_datetime(text: str) -> None:
    assert parse_rfc3339(text) == theirs(text)


WIDE_DIGITS = "\uff12\uff10\uff12\uff16-11-29T12:00:00Z"  # fullwidth digits: not ASCII


@pytest.mark.parametrize("text", ["", WIDE_DIGITS, "2026-02-30T12:00:00Z", "nonsense"])
def test_nonsense_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)
