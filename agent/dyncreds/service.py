"""The op table: a typed request -> the agent call -> a response line.

Separate from the socket (server.py) and the process (daemon.py), so that every
op can be tested without either. The table answers with the bytes it sends and
the lease they carry (``Answer``): the audit records that lease, never one looked
up afterwards (a renewal or a refresh may have installed a newer one meanwhile).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from dyncreds import __version__, audit, gate, logs, protocol
from dyncreds.access import Asker, subject
from dyncreds.agent import Agent
from dyncreds.audit import AuditLog
from dyncreds.leases import Lease
from dyncreds.protocol import DyncredsError, Unavailable
from dyncreds.watchers import Watchers

log = logs.get("server")

# The response line, and the lease it hands out or made (credentials, renew, rotate).
Answer = tuple[bytes, Lease | None]
Table = Callable[[protocol.AnyRequest], Awaitable[Answer]]


class ResponseCache:
    """The two credentials answers of a lease, encoded once.

    A warm role answers thousands of requests from one lease; encoding its body
    (two RFC 3339 times, a JSON object) dominated the cost of each. A lease is
    immutable (an extension is a new Lease object), so its identity is the key.
    Only the current few leases are kept: the bytes hold secrets, which then live
    no longer than the Lease objects that hold them anyway.
    """

    MAX = 4096

    def __init__(self) -> None:
        self._process: dict[int, tuple[Lease, bytes]] = {}
        self._credentials: dict[int, tuple[Lease, bytes]] = {}

    def _get(
        self, table: dict[int, tuple[Lease, bytes]], lease: Lease, encode: Callable[[Lease], bytes]
    ) -> bytes:
        hit = table.get(id(lease))
        if hit is not None and hit[0] is lease:
            return hit[1]
        if len(table) >= self.MAX:
            table.clear()
        data = encode(lease)
        table[id(lease)] = (lease, data)
        return data

    def credential_process(self, lease: Lease) -> bytes:
        return self._get(self._process, lease, Lease.credential_process_line)

    def credentials(self, lease: Lease) -> bytes:
        return self._get(
            self._credentials,
            lease,
            lambda lease: protocol.ok(
                {"credentials": lease.credential_process(), "lease": lease.summary()}
            ),
        )


AUDITED = {
    protocol.GetCredentials: "credentials",
    protocol.CredentialProcess: "credential_process",
    protocol.Revoke: "revoke",
    protocol.Renew: "renew",
    protocol.Rotate: "rotate",
    protocol.RotateRoot: "rotate_root",
    protocol.Unlock: "unlock",
    protocol.Lock: "lock",
}


HAND_OUTS = frozenset({"credentials", "credential_process"})

# Ops after which every endpoint must drop what it cached before replying (the
# lock fence: watchers.py).
FENCED = (protocol.Lock, protocol.Unlock, protocol.Revoke, protocol.Renew, protocol.Rotate)


def make_handler(
    agent: Agent,
    on_reload: Callable[[], Awaitable[list[str]]],
    process_status: Callable[[], dict[str, Any]] = dict,
    audit_log: AuditLog | None = None,
    watchers: Watchers | None = None,
) -> Callable[[protocol.AnyRequest], Awaitable[bytes]]:
    """The op table, the access check of system mode (``gate.current`` is set for
    each connection), and the audit log around the ops it names (AUDITED) and
    around every refusal."""
    serve = _fenced(_op_table(agent, on_reload, process_status), watchers or Watchers())
    if audit_log is not None and not audit_log.enabled:
        audit_log = None

    async def checked(request: protocol.AnyRequest) -> bytes:
        visitor = gate.current.get()
        if visitor is not None:
            try:
                await visitor.check(request)
            except protocol.Forbidden as exc:
                _name_peer(visitor)
                log.warning("request.forbidden", user=visitor.asker.user, uid=visitor.uid)
                if audit_log is not None:
                    op = AUDITED.get(type(request)) or type(request).__struct_config__.tag
                    audit_log.record(str(op), exc.code, role=subject(request))
                raise
            _name_peer(visitor)
        if audit_log is None:
            return (await serve(request))[0]
        return await audited(request)

    async def audited(request: protocol.AnyRequest) -> bytes:
        assert audit_log is not None
        if isinstance(request, protocol.Report):
            _record_report(audit_log, request)
            return protocol.ok({"recorded": len(request.events)})
        op = AUDITED.get(type(request))
        if op is None:
            return (await serve(request))[0]
        role = getattr(request, "role", None)
        try:
            response, lease = await serve(request)
        except DyncredsError as exc:
            audit_log.record(op, exc.code, role=role)
            raise
        fields = {
            "role": role,
            "lease_id": lease.id if lease else getattr(request, "lease_id", None),
            "access_key_id": lease.access_key_id if lease else None,
        }
        await _record_served(audit_log, op, fields)
        return response

    return checked


async def _record_served(audit_log: AuditLog, op: str, fields: dict[str, Any]) -> None:
    """Record a served op. With ``[audit] required``, a hand-out waits for its record
    to reach the disk and raises Unavailable if it cannot (the response is dropped)."""
    if audit_log.required and op in HAND_OUTS:
        # Fail closed: no credentials leave without their record on disk.
        if not await audit_log.record_and_wait(op, "ok", **fields):
            audit_log.record(op, "unavailable", role=fields["role"])
            raise Unavailable(
                f"the audit log cannot be written ({audit_log.error or 'buffer full'}) and "
                "[audit] required = true: credentials are refused until it can; free disk "
                "space or fix the state directory"
            )
        return
    audit_log.record(op, "ok", **fields)


def _name_peer(visitor: gate.Visitor) -> None:
    """The audit log names the consumer, not only its uid."""
    peer = audit.current_peer.get()
    if peer is not None and peer.user is None:
        peer.user = visitor.asker.user


def _asker() -> Asker | None:
    """System mode: who is asking (their leases are theirs alone)."""
    visitor = gate.current.get()
    return visitor.asker if visitor is not None else None


def _viewer(agent: Agent) -> tuple[list[str] | None, int | None]:
    """System mode, a non-admin: the roles it may see and its uid; else (None, None)."""
    visitor = gate.current.get()
    if visitor is None or visitor.admin:
        return None, None
    return visitor.policy.visible(visitor.asker, agent.config.roles), visitor.uid


def _record_report(audit_log: AuditLog, report: protocol.Report) -> None:
    """An endpoint's hand-outs and refusals, one line per (client, outcome, key),
    with its count and first/last times; the peer is the endpoint's process."""
    for event in report.events:
        audit_log.record(
            "endpoint",
            event.outcome,
            role=event.role,
            mode=event.mode,
            count=event.count,
            first=event.first,
            last=event.last,
            client={"address": event.client, "uid": event.client_uid},
            access_key_id=event.access_key_id,
            lease_id=event.lease_id,
            reason=event.reason,
        )


def _fenced(table: Table, watchers: Watchers) -> Table:
    """The endpoints' ops (watch, report), and the fence after the FENCED ops."""

    async def handle(request: protocol.AnyRequest) -> Answer:
        if isinstance(request, protocol.Watch):
            generation = await watchers.watch(request.id, request.seen)
            return protocol.ok({"generation": generation}), None
        if isinstance(request, protocol.Report):
            return protocol.ok({"recorded": 0}), None  # the audit log is off
        response = await table(request)
        if isinstance(request, FENCED):
            await watchers.bump()  # replies once every endpoint has dropped its cache
        return response

    return handle


def _op_table(
    agent: Agent,
    on_reload: Callable[[], Awaitable[list[str]]],
    process_status: Callable[[], dict[str, Any]] = dict,
) -> Table:
    """The op table. ``on_reload`` is the daemon's (it tells systemd);
    ``process_status`` adds what only the process knows to ``status.agent``."""
    cache = ResponseCache()

    async def handle(request: protocol.AnyRequest) -> Answer:
        match request:
            case protocol.CredentialProcess(role=role):
                lease = await agent.credentials(role, _asker())
                return cache.credential_process(lease), lease
            case protocol.GetCredentials(role=role):
                lease = await agent.credentials(role, _asker())
                return cache.credentials(lease), lease
            case protocol.Renew(role=role):
                return await _renew(agent, role)
            case protocol.Rotate(role=role):
                _owner(f"rotate role {role}")  # one static user's key, everyone's
                new, old = await agent.rotate(role)
                replaced = old.summary() if old is not None else None
                return protocol.ok({"lease": new.summary(), "replaced": replaced}), new
        return await _other_op(agent, request, on_reload, process_status), None

    return handle


async def _other_op(
    agent: Agent,
    request: protocol.AnyRequest,
    on_reload: Callable[[], Awaitable[list[str]]],
    process_status: Callable[[], dict[str, Any]],
) -> bytes:
    """The ops that hand out no lease."""
    match request:
        case protocol.Ping():
            return protocol.ok({"version": __version__, "pid": os.getpid()})
        case protocol.Status():
            only, owner = _viewer(agent)
            status = agent.status(only, owner)
            status["agent"].update(process_status())
            return protocol.ok(status)
        case protocol.Roles():
            return protocol.ok({"roles": agent.roles(_viewer(agent)[0])})
        case protocol.Revoke(lease_id=lease_id, role=role, all=everything, force=force):
            owner = _owner("forget leases (--force)" if force else None)
            results = await agent.revoke(
                lease_id=lease_id, role=role, everything=everything, force=force, owner=owner
            )
            revoked = sorted(r["lease_id"] for r in results)
            return protocol.ok({"revoked": revoked, "results": results})
        case protocol.Reload():
            return protocol.ok({"roles": await on_reload()})
        case protocol.RotateRoot() | protocol.Unlock() | protocol.Lock() | protocol.FleetStatus():
            return await _root_op(agent, request)
    raise protocol.UnknownOp(f"unhandled op {type(request).__name__}")


async def _renew(agent: Agent, role: str) -> Answer:
    """New keys now: the asker's own lease (a shared one is an admin's to renew)."""
    if _owner(None) is not None and agent.key(role, _asker()).uid is None:
        _owner(f"renew the shared lease of role {role}")
    new, old = await agent.renew(role, _asker())
    replaced = old.summary() if old is not None else None
    return protocol.ok({"lease": new.summary(), "replaced": replaced}), new


def _owner(admins_only: str | None) -> int | None:
    """System mode, a non-admin: the uid whose own leases it may revoke or renew.
    ``admins_only``: what the request would do, if only an admin may (refused)."""
    visitor = gate.current.get()
    if visitor is None or visitor.admin:
        return None
    if admins_only is not None:
        raise protocol.Forbidden(
            f"user {visitor.asker.user} (uid {visitor.uid}) may not {admins_only}: "
            "that is for this agent's administrators"
        )
    return visitor.uid


async def _root_op(
    agent: Agent,
    request: protocol.RotateRoot | protocol.Unlock | protocol.Lock | protocol.FleetStatus,
) -> bytes:
    """The ops about the agent's root and its fleet rather than a role."""
    match request:
        case protocol.RotateRoot():
            return protocol.ok({"access_key_id": await agent.rotate_root()})
        case protocol.Unlock(code=code):
            until = await agent.root.unlock(code)
            return protocol.ok({"unlocked_until": protocol.rfc3339(until)})
        case protocol.Lock():
            agent.root.lock_now()
            return protocol.ok({})
        case protocol.FleetStatus():
            if agent.fleet is None:
                raise protocol.BadRequest(
                    "this agent is not in a fleet: add a [fleet] table to config.toml"
                )
            return protocol.ok(await agent.fleet.status())
