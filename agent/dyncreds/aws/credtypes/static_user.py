"""``static_user`` (Vault's static roles): an existing IAM user whose access key
the agent rotates every ``rotation_period`` (aws/static_user.py does the work:
never a key it did not create, a lost CreateAccessKey reconciled). The current
key is sealed at rest (aws/staticstore.py), so a restart serves it again."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from dyncreds.aws.credtypes import Ops
from dyncreds.kinds import Kind

if TYPE_CHECKING:
    from dyncreds.aws.credtypes import Host, OnStep
    from dyncreds.config import Role
    from dyncreds.journal import Record
    from dyncreds.leases import Lease, Window

# The lease's life is the rotation period; what it announces is the period plus
# min_remaining (``overlap``), so SDKs have moved to the next key well before.
KIND = Kind(
    name="static_user",
    fields=frozenset({"username", "rotation_period"}),
    min_ttl=15 * 60,
    max_ttl=None,
    extendable=False,
    needs_one_of=("username",),
    needs="a static_user role needs username (the existing IAM user whose key is rotated)",
    policy_arns_max=0,
    on_revoke="key deleted",
    always_warm=True,
    overlap=True,
    shared=True,
    period_field="rotation_period",
    kept_while_same=("username",),
    journal_thing="key",
)


async def issue(
    host: Host, role: Role, lease_id: str, window: Window, on_step: OnStep, user: str
) -> Lease:
    import trio

    from dyncreds import logs
    from dyncreds.aws import static_user

    lease = await static_user.create(
        host.aws,
        host.journal,
        role=role,
        lease_id=lease_id,
        window=window,
        propagation=host.propagation,
        create_grace=host.create_grace,
        on_step=on_step,
    )
    if host.static_store is not None:
        try:  # a restart then serves this key instead of making another
            await trio.to_thread.run_sync(host.static_store.save, lease)
        except Exception as exc:  # (a locked keyring): only the restart suffers
            logs.get("aws").warning(
                "static_user.seal_failed", role=role.name, error=type(exc).__name__
            )
    return lease


def restore(host: Host, role: Role) -> Lease | None:
    """At start-up: the role's current key, if it was sealed at rest and the
    journal still has its lease active (blocking: before the event loop)."""
    from dyncreds import logs
    from dyncreds.leases import Lease  # (leases loads the rows: not at the top)

    if host.static_store is None:
        return None
    now = time.time()
    current = sorted(
        (
            r
            for r in host.journal.all()
            if r.role == role.name and r.thing == KIND.journal_thing and r.state == "active"
            and r.access_key_id and r.revoke_at > now
        ),
        key=lambda r: r.created_at,
        reverse=True,
    )  # fmt: skip
    for record in current[:1]:
        secret = host.static_store.load(role.name, record)
        if secret is not None:
            logs.get("aws").info("static_user.restored", role=role.name, key=record.access_key_id)
            return Lease(
                id=record.lease_id,
                role=role.name,
                credential_type=KIND.name,
                access_key_id=str(record.access_key_id),
                secret_access_key=secret,
                session_token=None,
                issued_at=record.created_at,
                expires_at=record.revoke_at,
                hard_expires_at=record.revoke_at,
                user_name=record.user_name,
            )
    return None


async def revoke(host: Host, record: Record) -> bool:
    """Our key of the user - never one the agent did not create: those listed
    before it (the record's ``detail``) and every other record's stay."""
    from dyncreds.aws import static_user

    keep = _listed_keys(record.detail) + [
        r.access_key_id for r in host.journal.all() if r.access_key_id and r is not record
    ]
    gone = await static_user.delete_key(host.aws, record.user_name, record.access_key_id, keep)
    if host.static_store is not None:  # the sealed copy of a deleted key is of no use
        import trio

        await trio.to_thread.run_sync(host.static_store.forget, record.role, record.lease_id)
    return gone


def _listed_keys(detail: str | None) -> list[str]:
    try:
        keys = json.loads(detail or "[]")
    except ValueError:
        return []
    return [str(k) for k in keys] if isinstance(keys, list) else []


OPS = Ops(issue=issue, revoke=revoke, restore=restore)
