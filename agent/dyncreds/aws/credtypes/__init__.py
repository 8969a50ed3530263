"""The credential types, one module each; ``kinds.TYPES`` registers them.

A type module holds its row, ``KIND`` (``kinds.Kind``: pure data, which config
reads), and ``OPS`` (``Ops`` below): what it does in AWS, each function handed the
backend (``aws/backend.py``, the host: the AWS session, the journal, names,
propagation checks) and, to issue, the window the core decided
(``leases.window``). Its top level imports nothing heavy - config loads it for
the row, without trio or boto3 - so each function imports the machinery it
calls (``aws/iam_user.py``, ``sts.py``, ``static_user.py``, ``session_revocation.py``)
where it runs. The backend dispatches to ``ops(kind)``; nothing else knows a type.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: config loads this package for the rows
    from dyncreds.aws.iam_user import Propagation
    from dyncreds.aws.session import AwsSession
    from dyncreds.aws.staticstore import StaticStore
    from dyncreds.config import Role
    from dyncreds.journal import Journal, Record
    from dyncreds.kinds import Kind
    from dyncreds.leases import Lease, Window

    OnStep = Callable[[str], None]

    class Host(Protocol):
        """What a type's operations use of the backend (aws/backend.py)."""

        aws: AwsSession
        journal: Journal
        agent_id: str
        propagation: Propagation
        create_grace: float
        static_store: StaticStore | None

        def name(self, role: Role, limit: int, user: str, template: str | None = None) -> str: ...
        def tag_value(self, template: str, role: Role, user: str) -> str: ...

    Issue = Callable[[Host, Role, str, Window, OnStep, str], Awaitable[Lease]]
    Extend = Callable[[Host, Lease, float], Awaitable[None]]
    Revoke = Callable[[Host, Record], Awaitable[bool]]
    Restore = Callable[[Host, Role], Lease | None]
    RevokeSessions = Callable[[Host, Role, float], Awaitable[None]]


@dataclass(frozen=True)
class Ops:
    """What a type does in AWS. ``issue`` (``host, role, lease_id, window, on_step,
    user``: ``user`` is whose name goes into what AWS sees) is the one every type
    has; the rest only where the row says so: ``extend`` (``Kind.extendable``),
    ``revoke`` (a journal record of ``Kind.journal_thing``; True if it existed),
    ``restore`` (at start-up, a lease kept at rest, blocking), ``revoke_sessions``
    (``Kind.sessions_scope``: deny the role's sessions issued before ``at``)."""

    issue: Issue
    extend: Extend | None = None
    revoke: Revoke | None = None
    restore: Restore | None = None
    revoke_sessions: RevokeSessions | None = None


def ops(kind: Kind) -> Ops:
    """The type's operations (its module is loaded already: registering did it)."""
    found = importlib.import_module(kind.module).OPS
    assert isinstance(found, Ops), f"{kind.module}.OPS is not a credtypes.Ops"
    return found
