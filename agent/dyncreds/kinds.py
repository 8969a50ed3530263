"""Credential kinds as data. Pure.

One row per credential type says everything the rest of the code needs to know
about it: which role-file fields it takes, its TTL bounds, whether a lease of it
can be extended (same keys, later expiry), whether it creates something in AWS
that must be journaled and revoked, and which issuer in ``aws/`` mints it.
``config`` checks role files against the row, ``leases`` and ``broker`` ask it
whether to extend or replace, ``views`` whether a lease is revoked or lapses.
A new type is one row here and one issuer in ``aws/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CredentialType = Literal[
    "iam_user", "assumed_role", "federation_token", "session_token", "static_user"
]

# Policy fields: "policy" stands for policy_document or policy_file.
POLICY_FIELDS = frozenset({"policy_document", "policy_file", "policy_arns"})

HOUR = 3600


@dataclass(frozen=True)
class Kind:
    name: CredentialType
    # Role-file keys this kind accepts beyond the ones every kind takes
    # (credential_type, ttl, max_ttl, region, prefetch).
    fields: frozenset[str]
    # AWS's bounds on the requested duration; None: the agent's own lease rules.
    min_ttl: int
    max_ttl: int | None
    # Same keys, later expiry (only an IAM user's lifetime is ours to move).
    extendable: bool
    # Creates something in AWS: journaled before it is created, revoked after.
    revocable: bool
    # The key of the function in aws/issuers.py that mints it.
    issuer: str
    # At least one of these must be set ("policy" = policy_document or policy_file),
    # and the sentence that says so.
    needs_one_of: tuple[str, ...] = ()
    needs: str = ""
    policy_arns_max: int = 10
    # What a revoked lease of this kind becomes, in the words status and revoke use.
    on_revoke: str = "valid until its expiry: STS credentials cannot be deleted"
    # Refreshed on schedule whether anyone asks or not (rotation, like Vault's).
    always_warm: bool = False
    # A lease announces min_remaining beyond its ttl, so that it overlaps its
    # successor: SDKs move to a rotated key well before the old one is deleted.
    overlap: bool = False
    # One lease for every consumer, even in system mode: it is one existing IAM
    # user's key (which has room for two keys, not one per consumer).
    shared: bool = False


KINDS: dict[CredentialType, Kind] = {
    "iam_user": Kind(
        name="iam_user",
        fields=POLICY_FIELDS | {"iam_groups", "iam_tags", "user_path", "permissions_boundary_arn"},
        min_ttl=60,
        max_ttl=None,
        extendable=True,
        revocable=True,
        issuer="iam_user",
        needs_one_of=("policy", "policy_arns", "iam_groups"),
        needs="an iam_user role needs at least one of "
        "policy_document, policy_file, policy_arns or iam_groups",
        policy_arns_max=20,
        on_revoke="deleted",
    ),
    "assumed_role": Kind(
        name="assumed_role",
        fields=POLICY_FIELDS
        | {
            "role_arns",
            "external_id",
            "session_tags",
            "session_name",
            "source_identity",
            "revoke_sessions",
        },
        min_ttl=15 * 60,
        max_ttl=12 * HOUR,
        extendable=False,
        revocable=False,
        issuer="assume_role",
        needs_one_of=("role_arns",),
        needs="an assumed_role role needs role_arns",
    ),
    "federation_token": Kind(
        name="federation_token",
        fields=POLICY_FIELDS | {"session_name", "revoke_sessions"},
        min_ttl=15 * 60,
        max_ttl=36 * HOUR,
        extendable=False,
        revocable=False,
        issuer="federation_token",
        needs_one_of=("policy", "policy_arns"),
        needs="a federation_token role needs policy_document, policy_file or policy_arns "
        "(without one the token can do nothing)",
    ),
    "session_token": Kind(
        name="session_token",
        fields=frozenset(),
        min_ttl=15 * 60,
        max_ttl=36 * HOUR,
        extendable=False,
        revocable=False,
        issuer="session_token",
    ),
    # An existing IAM user whose key the agent rotates every rotation_period; the
    # lease's "ttl" is that period, and what it announces is period + min_remaining.
    "static_user": Kind(
        name="static_user",
        fields=frozenset({"username", "rotation_period"}),
        min_ttl=15 * 60,
        max_ttl=None,
        extendable=False,
        revocable=True,
        issuer="static_user",
        needs_one_of=("username",),
        needs="a static_user role needs username (the existing IAM user whose key is rotated)",
        policy_arns_max=0,
        on_revoke="key deleted",
        always_warm=True,
        overlap=True,
        shared=True,
    ),
}

CREDENTIAL_TYPES: tuple[CredentialType, ...] = tuple(KINDS)


def kind(name: CredentialType) -> Kind:
    return KINDS[name]


def kinds_taking(field: str) -> frozenset[CredentialType]:
    """Which kinds accept a role-file field that not every kind takes."""
    return frozenset(k.name for k in KINDS.values() if field in k.fields)


# Fields some kinds refuse: the union of every kind's own fields.
KIND_FIELDS = frozenset().union(*(k.fields for k in KINDS.values()))
