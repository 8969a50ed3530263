"""Static users (Vault's static roles): an existing IAM user whose access key the
agent rotates. The agent creates a key of its own, proves it works, serves it,
and on every rotation does the same again; the previous key is deleted at the
expiry it announced (the reaper, from its journal record).

It never deletes a key it did not create. The journal record is written before
CreateAccessKey with the user's keys as they were (``detail``), so that a key
created by a CreateAccessKey whose answer was lost (a crash, a timeout) can
still be told apart from the user's own keys and cleaned up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import trio

from dyncreds import logs
from dyncreds.aws.errors import GONE_CODES
from dyncreds.aws.iam_user import Propagation, wait_until_usable
from dyncreds.aws.session import AwsSession
from dyncreds.config import Role
from dyncreds.journal import Journal
from dyncreds.leases import Lease, Secret, Window
from dyncreds.protocol import Upstream, rfc3339

log = logs.get("aws")

KEYS_MAX = 2  # IAM's limit per user
SKEW = 300.0  # keys created this long before a record may still be its (clock skew)


async def user_keys(aws: AwsSession, user_name: str) -> list[str]:
    page = await aws.call("iam", "list_access_keys", UserName=user_name)
    return [str(k["AccessKeyId"]) for k in page.get("AccessKeyMetadata", [])]


async def create(
    aws: AwsSession,
    journal: Journal,
    *,
    role: Role,
    lease_id: str,
    window: Window,
    propagation: Propagation,
    create_grace: float,
    on_step: Callable[[str], None] = lambda step: None,
) -> Lease:
    """A new key of the role's user, proven to work, journaled; a lease of it."""
    user, now, expires_at = str(role.username), window.issued_at, window.expires_at
    thing = role.kind.journal_thing  # the journal's word for a key, from the type's row
    assert thing is not None, "a static key is journaled"
    on_step("list_keys")
    existing = await reconcile(aws, journal, user, thing)
    if len(existing) >= KEYS_MAX:
        raise _no_slot(journal, user, existing, thing)
    await journal.creating(
        lease_id, role.name, user, now, expires_at, thing=thing, detail=json.dumps(existing)
    )
    created_key: str | None = None
    try:
        on_step("create_key")
        result = (await aws.call("iam", "create_access_key", UserName=user))["AccessKey"]
        created_key = str(result["AccessKeyId"])
        secret = Secret(result["SecretAccessKey"])
        await journal.key_created(lease_id, created_key)
        on_step("propagate")
        await wait_until_usable(aws, created_key, secret, propagation)
        on_step("activate")
        await journal.activate(lease_id, expires_at)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            if created_key is None and isinstance(exc, Upstream) and exc.created_nothing:
                await journal.forget(lease_id)
            else:
                # The key may exist (or still appear): the reaper deletes ours.
                await journal.abandon(
                    lease_id, time.time(), settle_until=time.time() + create_grace
                )
        raise
    log.info("static_user.key_created", role=role.name, user=user, key=created_key)
    return Lease(
        id=lease_id,
        role=role.name,
        credential_type=role.credential_type,
        access_key_id=created_key,
        secret_access_key=secret,
        session_token=None,
        issued_at=now,
        expires_at=expires_at,
        hard_expires_at=expires_at,
        user_name=user,
    )


def _no_slot(journal: Journal, user: str, existing: list[str], thing: str) -> Upstream:
    """Both of IAM's slots are taken: by dyncreds' own keys (one frees at the expiry
    it announced, never earlier - or now, by `revoke`), or by the user's."""
    ours = sorted(
        (r for r in journal.all() if r.thing == thing and r.access_key_id in existing),
        key=lambda r: r.revoke_at,
    )
    if not ours:
        return Upstream(
            f"IAM user {user} already has two access keys ({', '.join(existing)}); "
            "dyncreds needs a free slot for the key it rotates: delete one that is not in use",
            aws_code="LimitExceeded",
        )
    first = ours[0]
    return Upstream(
        f"IAM user {user} already holds two access keys ({', '.join(existing)}), a third is "
        f"not possible: {first.access_key_id} frees its slot at its announced expiry "
        f"{rfc3339(first.revoke_at)}, or now with `dyncreds revoke {first.lease_id}`",
        aws_code="LimitExceeded",
    )


async def reconcile(aws: AwsSession, journal: Journal, user: str, thing: str) -> list[str]:
    """The user's keys, after deleting those an abandoned CreateAccessKey (its
    answer lost or timed out) left: keys neither journaled nor the user's own
    (listed before our record), created after that record. Runs before anything
    else happens to the user."""
    page = await aws.call("iam", "list_access_keys", UserName=user)
    listed = {str(k["AccessKeyId"]): k["CreateDate"].timestamp() for k in page["AccessKeyMetadata"]}
    blind = [
        r
        for r in journal.all()
        if r.thing == thing and r.user_name == user and r.access_key_id is None
    ]
    if not blind:
        return list(listed)  # every create's answer arrived: nothing unknown exists
    known = {r.access_key_id for r in journal.all() if r.access_key_id}
    before = set().union(*(_listed(r.detail) for r in blind))
    since = min(r.created_at for r in blind) - SKEW
    for key, created in list(listed.items()):
        if key in known or key in before or created < since:
            continue
        try:
            await aws.call("iam", "delete_access_key", UserName=user, AccessKeyId=key)
        except Upstream as exc:
            if exc.aws_code not in GONE_CODES:
                raise
        log.warning("static_user.unknown_key_deleted", user=user, key=key)
        del listed[key]
    return list(listed)


def _listed(detail: str | None) -> set[str]:
    try:
        keys = json.loads(detail or "[]")
    except ValueError:
        return set()
    return {str(k) for k in keys} if isinstance(keys, list) else set()


async def delete_key(
    aws: AwsSession, user_name: str, access_key_id: str | None, known_before: list[str]
) -> bool:
    """Delete our key. Without its id (its creation's answer was lost), every key
    of the user that was not there before is ours. False if nothing was there."""
    if access_key_id is not None:
        targets = [access_key_id]
    else:
        try:
            targets = [k for k in await user_keys(aws, user_name) if k not in known_before]
        except Upstream as exc:
            if exc.aws_code in GONE_CODES:
                return False
            raise
    deleted = False
    for key in targets:
        try:
            await aws.call("iam", "delete_access_key", UserName=user_name, AccessKeyId=key)
            deleted = True
        except Upstream as exc:
            if exc.aws_code not in GONE_CODES:
                raise
    return deleted
