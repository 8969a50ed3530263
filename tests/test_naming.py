"""User and session names that AWS accepts, whatever the template renders."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from dyncreds.aws import naming

TEMPLATE = "dyncreds-{user}-{role}-{unix_time}-{random}"


def test_fits_and_keeps_unique_parts() -> None:
    name = naming.render(
        TEMPLATE, user="alice", role="ec2", unix_time=1800000000, limit=64, random="abcdef0123"
    )
    assert name == "dyncreds-alice-ec2-1800000000-abcdef0123"


@given(
    user=st.text(max_size=80),
    role=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True),
    limit=st.sampled_from([32, 64]),
)
def test_always_valid_and_within_limit(user: str, role: str, limit: int) -> None:
    name = naming.render(TEMPLATE, user=user, role=role, unix_time=1800000000, limit=limit)
    assert len(name) <= limit
    assert re.fullmatch(r"[\w+=,.@-]+", name, re.ASCII)  # what IAM accepts
    assert "1800000000" in name  # the variable parts are cut, not the time
