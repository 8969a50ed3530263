"""Who may do what in system mode: the ``[[access]]`` rules, evaluated. Pure.

A request is allowed when one rule names its asker (by user name, or by a group
the user is in) and allows the request's op on its role (a name or a shell-style
glob). The agent's own uid and uid 0 are always admin. The facts - uid from
SO_PEERCRED, user name and groups from the user database - are gathered by
``gate.py``; nothing the client sends identifies it.

Ops, as the rules name them:

- ``credentials``: ``credentials``, ``credential_process`` (and so the endpoints
  of ``exec`` and ``serve``, which ask the agent with them);
- ``status``: ``status`` and ``roles``, which then show only the asker's own
  leases and the roles the asker may use;
- ``revoke``: ``revoke``, ``renew`` and ``rotate`` of the asker's own leases;
- ``admin``: every op, every role, every lease.

``ping`` is open to everyone: it is how a client finds out that an agent listens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from dyncreds import protocol
from dyncreds.config import AccessRule
from dyncreds.protocol import Forbidden


@dataclass(frozen=True)
class Asker:
    """The process on the other end, as the kernel and the user database say."""

    uid: int
    user: str  # the user name (the uid as text when the user database has none)
    groups: frozenset[str]


# Request type -> the op a rule must allow (None: anyone may).
OPS: dict[type, str | None] = {
    protocol.Ping: None,
    protocol.GetCredentials: "credentials",
    protocol.CredentialProcess: "credentials",
    protocol.Status: "status",
    protocol.Roles: "status",
    protocol.Revoke: "revoke",
    protocol.Renew: "revoke",
    protocol.Rotate: "revoke",
    protocol.Reload: "admin",
    protocol.RotateRoot: "admin",
    protocol.Unlock: "admin",
    protocol.Lock: "admin",
    protocol.FleetStatus: "admin",
    # An endpoint's link: a generation counter, and its audit lines (which name the
    # reporting process as the kernel does, whoever sends them).
    protocol.Watch: None,
    protocol.Report: "credentials",
}

_WORDS = {
    "credentials": "get credentials of role {role}",
    "status": "see role {role}",
    "revoke": "revoke or renew leases of role {role}",
    "admin": "administer this agent ({op})",
}


@dataclass(frozen=True)
class Policy:
    """The rules of one configuration, and whose uid is always admin."""

    rules: tuple[AccessRule, ...]
    agent_uid: int

    def admin(self, asker: Asker) -> bool:
        return asker.uid in (0, self.agent_uid) or any(
            "admin" in rule.ops for rule in self._mine(asker)
        )

    def allows(self, asker: Asker, op: str, role: str | None) -> bool:
        """May ``asker`` do ``op`` on ``role`` (None: on some role, e.g. ``status``)?"""
        if self.admin(asker):
            return True
        return any(
            op in rule.ops and (role is None or _named(role, rule.roles))
            for rule in self._mine(asker)
        )

    def decide(self, asker: Asker, request: protocol.AnyRequest) -> Forbidden | None:
        """None to allow, or the ``forbidden`` error naming the user and the role."""
        op = OPS[type(request)]
        if op is None:
            return None
        role = subject(request)
        if self.allows(asker, op, None if op == "admin" else role):
            return None
        what = _WORDS[op].format(role=role or "(any)", op=type(request).__struct_config__.tag)
        return Forbidden(
            f"user {asker.user} (uid {asker.uid}) may not {what}: no [[access]] rule "
            "allows it; ask this host's dyncreds administrator"
        )

    def visible(self, asker: Asker, roles: Iterable[str]) -> list[str]:
        """The roles ``asker`` may see in ``status`` and ``roles``."""
        return [name for name in roles if self.allows(asker, "status", name)]

    def _mine(self, asker: Asker) -> Iterable[AccessRule]:
        return (
            rule
            for rule in self.rules
            if asker.user in rule.users or not asker.groups.isdisjoint(rule.groups)
        )


def subject(request: protocol.AnyRequest) -> str | None:
    """The role a request is about: its ``role``, or the role part of a lease id
    (``ROLE/8-hex``)."""
    role = getattr(request, "role", None)
    if role is None and isinstance(request, protocol.Revoke) and request.lease_id:
        role = request.lease_id.partition("/")[0]
    return role


def _named(role: str, patterns: Iterable[str]) -> bool:
    return any(role == pattern or fnmatchcase(role, pattern) for pattern in patterns)
