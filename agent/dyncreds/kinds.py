"""Credential kinds: the registry of types, and a type's row as data. Pure.

Each credential type is one module under ``aws/credtypes/`` holding its row (a
``Kind``: which role-file fields it takes, its TTL bounds, whether a lease of it
can be extended, whether it creates something in AWS that must be journaled and
revoked, what it answers to ``rotate``, ``login`` and ``revoke_sessions``) and
what it does in AWS (``OPS``: issue, and extend, revoke, restore,
revoke_sessions where it has them). ``TYPES`` below lists every type, one line
each, loaded at the first lookup of ``KINDS``; ``register`` is the one way in for
any other (a test registers a toy type with it).

The rest of the code asks the row, never the name: ``config`` checks role files
against it, ``leases`` and ``broker`` ask it whether to extend or replace and
when a lease expires, ``views`` whether a lease is revoked or lapses, the agent
whether a role rotates or keeps its lease over a reload, revocation which other
leases a session deny reaches, ``login`` whether the console takes it.

A type module's top level imports, of dyncreds, only this module and ``aws/credtypes`` (the
rest it names for annotations only, under TYPE_CHECKING) - config loads it for its
row, and the CLI and the pure core load config (the import contract "A credential
type's module is light at its top" and tests/test_credtypes.py hold that); its AWS
machinery is imported inside the functions that use it, when the agent issues.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import msgspec

# A type's name, as role files, leases and the journal spell it.
CredentialType = str

# Policy fields: "policy" stands for policy_document or policy_file.
POLICY_FIELDS = frozenset({"policy_document", "policy_file", "policy_arns"})

HOUR = 3600

# The credential types, one module each: a new type is one line here (and its module).
TYPES = (
    "dyncreds.aws.credtypes.iam_user",
    "dyncreds.aws.credtypes.assumed_role",
    "dyncreds.aws.credtypes.federation_token",
    "dyncreds.aws.credtypes.session_token",
    "dyncreds.aws.credtypes.static_user",
)


@dataclass(frozen=True)
class Kind:
    name: CredentialType
    # Role-file keys this kind accepts beyond the ones every kind takes
    # (credential_type, ttl, max_ttl, region, prefetch), from the role file's
    # shared schema (config/schema.py: RoleFile, Role).
    fields: frozenset[str]
    # AWS's bounds on the requested duration; None: the agent's own lease rules.
    min_ttl: int
    max_ttl: int | None
    # Same keys, later expiry (only an IAM user's lifetime is ours to move).
    extendable: bool
    # At least one of these must be set ("policy" = policy_document or policy_file),
    # and the sentence that says so.
    needs_one_of: tuple[str, ...] = ()
    needs: str = ""
    policy_arns_max: int = 10
    # What a revoked lease of this kind becomes, in the words status and revoke use.
    on_revoke: str = "valid until its expiry: STS credentials cannot be deleted"
    # Refreshed on schedule whether anyone asks or not: a rotated key (like Vault's
    # static roles), which `rotate` replaces on demand.
    always_warm: bool = False
    # A lease announces min_remaining beyond its ttl, so that it overlaps its
    # successor: SDKs move to a rotated key well before the old one is deleted.
    overlap: bool = False
    # One lease for every consumer, even in system mode: it is one existing IAM
    # user's key (which has room for two keys, not one per consumer).
    shared: bool = False
    # The role file sets the lease's life with this field (a rotation period, by
    # default ``period_default``) instead of ttl and max_ttl.
    period_field: str | None = None
    period_default: int = 24 * HOUR
    # A reload keeps the current lease while these role fields are unchanged (the
    # key is the same user's whatever else changed); () : a changed role reissues.
    kept_while_same: tuple[str, ...] = ()
    # What its journal records are (the ``thing`` column): the reaper hands a
    # record to the kind that wrote it. None: it creates nothing in AWS.
    journal_thing: str | None = None
    # Which other leases a revoke_sessions deny of a role of this kind reaches:
    # those sharing one of its role_arns, or every lease of the kind (the deny is
    # on every federated user). None: the kind takes no revoke_sessions.
    sessions_scope: Literal["role_arns", "kind"] | None = None
    # Why the console refuses its credentials ("" : `login` works).
    login_refused: str = ""
    # Keys only this kind has, as a msgspec Struct (every field with a default):
    # config decodes them, each bad one reported, into ``Role.options``.
    options: type[msgspec.Struct] | None = None
    # The module that defines the type (set by ``register``).
    module: str = ""

    @property
    def revocable(self) -> bool:
        """Creates something in AWS: journaled before it is created, revoked after."""
        return self.journal_thing is not None


class Registry(Mapping[CredentialType, Kind]):
    """The kinds by name. The types of ``TYPES`` are loaded at the first lookup,
    not when this module is imported: each type module imports this one, and
    may be the first module a program imports."""

    def __init__(self, modules: tuple[str, ...]):
        self._rows: dict[CredentialType, Kind] = {}
        self._pending = list(modules)
        self._lock = threading.RLock()  # config may first be read in a thread

    def _loaded(self) -> dict[CredentialType, Kind]:
        if self._pending:
            with self._lock:
                while self._pending:
                    self._put(self._pending.pop(0))
        return self._rows

    def _put(self, module: str) -> Kind:
        row: Kind = importlib.import_module(module).KIND
        self._rows[row.name] = replace(row, module=module)
        return self._rows[row.name]

    def add(self, module: str) -> Kind:
        """Register the type its module defines, after the built-in ones."""
        self._loaded()
        return self._put(module)

    def remove(self, name: CredentialType) -> None:
        self._loaded().pop(name, None)

    def __getitem__(self, name: CredentialType) -> Kind:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[CredentialType]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


KINDS = Registry(TYPES)


def register(module: str) -> Kind:
    """Add the type its module defines (``KIND``, with ``OPS`` beside it)."""
    return KINDS.add(module)


def unregister(name: CredentialType) -> None:
    """Forget a type (a test's toy type, once the test is over)."""
    KINDS.remove(name)


def kind(name: CredentialType) -> Kind:
    return KINDS[name]


def names() -> tuple[CredentialType, ...]:
    """Every registered type, the built-in ones first, in ``TYPES`` order."""
    return tuple(KINDS)


def kinds_taking(field: str) -> frozenset[CredentialType]:
    """Which kinds accept a role-file field that not every kind takes."""
    return frozenset(k.name for k in KINDS.values() if field in k.fields)


def kind_fields() -> frozenset[str]:
    """Fields some kinds refuse: the union of every kind's own fields."""
    return frozenset().union(*(k.fields for k in KINDS.values()))


def by_thing(thing: str) -> Kind | None:
    """The kind whose journal records are this ``thing``."""
    return next((k for k in KINDS.values() if k.journal_thing == thing), None)
