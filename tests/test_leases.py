"""Pure timing rules and the broker's table, driven synchronously."""

from __future__ import annotations

import pickle

import pytest

from dyncreds import leases
from dyncreds.config import Role
from dyncreds.kinds import CredentialType
from dyncreds.leases import Lease, Secret, Timing

T = Timing(min_remaining=1200, idle_after=3600)


def role(
    kind: CredentialType = "iam_user", ttl: int = 3600, max_ttl: int = 43200, prefetch: bool = False
) -> Role:
    return Role(
        name="r",
        credential_type=kind,
        policy_document="{}",
        policy_arns=(),
        iam_groups=(),
        iam_tags=(),
        user_path="/",
        permissions_boundary_arn=None,
        ttl=ttl,
        max_ttl=max_ttl,
        role_arns=(),
        external_id=None,
        session_tags=(),
        region=None,
        prefetch=prefetch,
    )


def lease(
    issued: float = 0,
    ttl: float = 3600,
    hard: float | None = None,
    kind: CredentialType = "iam_user",
    lease_id: str = "r/00000001",
) -> Lease:
    return Lease(
        id=lease_id,
        role="r",
        credential_type=kind,
        access_key_id="AKIA",
        secret_access_key=Secret("s3cr3t"),
        session_token=None,
        issued_at=issued,
        expires_at=issued + ttl,
        hard_expires_at=hard or issued + 43200,
    )


def test_secret_never_shows_itself() -> None:
    secret = Secret("very-secret-value")
    assert "very-secret" not in repr(secret) + str(secret) + f"{secret}" + repr(lease())
    assert secret.reveal() == "very-secret-value"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_servable_needs_min_remaining() -> None:
    current = lease()
    assert leases.servable(current, 3600 - 1200, T, 3600)
    assert not leases.servable(current, 3600 - 1199, T, 3600)
    assert not leases.servable(None, 0, T, 3600)


def test_short_ttl_needs_half_its_lifetime() -> None:
    short = lease(ttl=900)
    assert leases.required_remaining(short, T, 900) == 450
    assert leases.servable(short, 449, T, 900)
    assert not leases.servable(short, 451, T, 900)


def test_refresh_before_the_deadline_with_jitter() -> None:
    current = lease()
    early = leases.refresh_at(current, T, 3600, 0.99)
    late = leases.refresh_at(current, T, 3600, 0.0)
    assert early < late <= 3600 - 1200
    assert late - early > 200


def test_extend_until_max_ttl_then_replace() -> None:
    current = lease(hard=7200)
    assert leases.refresh_kind(current, 2000, T, 3600) == "extend"
    assert leases.extended_expiry(current, 2000, 3600) == 5600
    assert leases.extended_expiry(current, 5000, 3600) == 7200
    assert leases.refresh_kind(lease(issued=0, ttl=6000, hard=7200), 4500, T, 3600) == "extend"
    assert leases.refresh_kind(lease(issued=0, ttl=6000, hard=7200), 5500, T, 3600) == "replace"
    assert leases.refresh_kind(lease(kind="session_token"), 2000, T, 3600) == "replace"


def test_activity() -> None:
    assert leases.is_active(100, False, 3000, T)
    assert not leases.is_active(100, False, 3800, T)
    assert not leases.is_active(None, False, 0, T)
    assert leases.is_active(None, True, 0, T)


def test_backoff_grows_and_is_capped() -> None:
    waits = [leases.backoff(n, 1.0) for n in range(1, 12)]
    assert waits == sorted(waits)
    assert waits[-1] == 300
    assert leases.backoff(1, 0.0) == 1.0


def test_credential_process_body_order_and_no_empty_token() -> None:
    body = lease().credential_process()
    assert list(body) == ["Version", "AccessKeyId", "SecretAccessKey", "Expiration"]
    assert lease().credential_process_line().startswith(b'{"Version":1,')


def test_the_window_is_decided_by_the_core_for_every_kind() -> None:
    """One rule for a new lease's times (the issuers and the fake only apply it):
    an expiry one ttl away, extendable to max_ttl; a rotated key announces
    min_remaining more, so it overlaps its successor; STS asks for the ttl."""
    now = 1_800_000_000.0
    iam = leases.window(role("iam_user", ttl=3600, max_ttl=43200), now, T)
    assert (iam.issued_at, iam.expires_at, iam.hard_expires_at) == (now, now + 3600, now + 43200)
    static = leases.window(role("static_user", ttl=86400, max_ttl=86400), now, T)
    assert static.expires_at == static.hard_expires_at == now + 86400 + 1200
    sts = leases.window(role("assumed_role", ttl=900, max_ttl=3600), now, T)
    assert sts.expires_at == sts.hard_expires_at == now + 900
    assert sts.duration == 900  # what AWS is asked for; its Expiration is served


def test_a_users_tags_read_back_as_the_journals_words() -> None:
    """The expiry crosses to AWS as the ``dyncreds:expires`` tag; one module knows
    the tag keys (aws/iam_user.py) and the sweep reads ``expires_at`` back."""
    from dyncreds.aws.iam_user import TAG_EXPIRY, TaggedUser, tags

    expiry = 1_800_003_600.0
    written = {t["Key"]: t["Value"] for t in tags("a1", "r/1", role(), expiry)}
    user = TaggedUser("u", written, 0.0)
    assert (user.agent, user.lease_id, user.role, user.expires_at) == ("a1", "r/1", "r", expiry)
    assert TaggedUser("u", {TAG_EXPIRY: "soon"}, 0.0).expires_at is None  # unreadable
    assert TaggedUser("u", {}, 0.0).lease_id is None
