"""System mode's door: who is asking, and may they (``access.py`` decides).

The server hands each connection's peer uid (SO_PEERCRED) to a ``Door``: the
user name and groups come from the user database (``pwd``/``grp``, so NSS
sources count too), re-read at most once a second per uid, in a worker thread
(an NSS lookup may be a network call). Each connection keeps its decisions as
long as the asker it saw and the policy are the same objects, so a client that
sends thousands of requests on one connection pays one dict lookup per request,
and a group membership change or a reload still takes effect within a second.
"""

from __future__ import annotations

import contextvars
import grp
import os
import pwd
import time
from collections.abc import Callable, Sequence
from typing import Final

import trio

from dyncreds import protocol
from dyncreds.access import Asker, Policy, subject
from dyncreds.config import AccessRule
from dyncreds.protocol import Forbidden

REFRESH: Final = 1.0  # seconds a user's groups are trusted before the next read
MAX_DECISIONS: Final = 256  # per connection (a client may name many roles)


def lookup(uid: int) -> Asker:
    """The user database's view of ``uid``: name, primary and supplementary groups."""
    try:
        entry = pwd.getpwuid(uid)
    except (KeyError, OverflowError):  # no such user (or the kernel's "nobody", -1)
        return Asker(uid, str(uid), frozenset())
    names = set()
    for gid in os.getgrouplist(entry.pw_name, entry.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return Asker(uid, entry.pw_name, frozenset(names))


class Door:
    """The policy of the current configuration and the user database, cached."""

    def __init__(
        self,
        rules: Callable[[], Sequence[AccessRule]],
        agent_uid: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        read: Callable[[int], Asker] = lookup,
    ):
        self._rules = rules
        self.agent_uid = os.getuid() if agent_uid is None else agent_uid
        self.clock = clock
        self._read = read
        self._users: dict[int, tuple[float, Asker]] = {}
        self._reading: dict[int, trio.Event] = {}
        self._policy = Policy((), self.agent_uid)
        self._source: object = None

    def policy(self) -> Policy:
        """The current rules as a Policy; the same object until a reload changes them."""
        rules = self._rules()
        if rules is not self._source:
            self._source, self._policy = rules, Policy(tuple(rules), self.agent_uid)
        return self._policy

    async def asker(self, uid: int) -> Asker:
        now = self.clock()
        hit = self._users.get(uid)
        if hit is not None and now - hit[0] < REFRESH:
            return hit[1]
        reading = self._reading.get(uid)
        if reading is not None:  # a herd of one user's shims: one read
            await reading.wait()
            return await self.asker(uid)
        self._reading[uid] = reading = trio.Event()
        try:
            fresh = await trio.to_thread.run_sync(self._read, uid)
        finally:
            del self._reading[uid]
            reading.set()
        if hit is not None and hit[1] == fresh:
            fresh = hit[1]  # the same object: connections keep their decisions
        self._users[uid] = (now, fresh)
        return fresh

    def connection(self, uid: int) -> Visitor:
        return Visitor(self, uid)


class Visitor:
    """One connection's asker and decisions (the policy's answers, cached)."""

    def __init__(self, door: Door, uid: int):
        self.door = door
        self.uid = uid
        self.asker = Asker(uid, str(uid), frozenset())
        self.policy = door.policy()
        self._until = -1.0  # the asker above is a placeholder until the first check
        self._decisions: dict[tuple[type, str | None], str | None] = {}

    async def check(self, request: protocol.AnyRequest) -> None:
        """Return if the request is allowed; raise ``Forbidden`` if not."""
        policy = self.door.policy()
        if policy is not self.policy or self.door.clock() >= self._until:
            asker = await self.door.asker(self.uid)
            if asker is not self.asker or policy is not self.policy:
                self._decisions.clear()
            self.asker, self.policy = asker, policy
            self._until = self.door.clock() + REFRESH
        key = (type(request), subject(request))
        try:
            refusal = self._decisions[key]
        except KeyError:
            error = policy.decide(self.asker, request)
            refusal = None if error is None else error.message
            if len(self._decisions) >= MAX_DECISIONS:
                self._decisions.clear()
            self._decisions[key] = refusal
        if refusal is not None:
            raise Forbidden(refusal)

    @property
    def admin(self) -> bool:
        return self.policy.admin(self.asker)


# Set by the server for each connection in system mode: who is asking (service.py
# reads it to key leases by consumer and to filter what a non-admin sees).
current: contextvars.ContextVar[Visitor | None] = contextvars.ContextVar(
    "dyncreds_visitor", default=None
)
