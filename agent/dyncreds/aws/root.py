"""rotate-root: replace the agent's own static access key, Vault's config/rotate-root.

Order matters, so that a failure at any step leaves a working root and at most
one extra key: journal the rotation, create the new key, prove it works, write
it to the store atomically, switch the clients, delete the old key, forget the
journal record. A SIGKILL anywhere leaves the record in 'creating', which
recovery makes due at the next start: ``finish_interrupted`` then keeps the key
the store holds and deletes the other one (the old key, or a new key whose
secret died with the process).

The store decides, never memory: after any store error (a keyring that fails
after it wrote, a full disk) the store is read back; the key it holds is never
deleted, and while it cannot be read neither key is. Errors say whether AWS or
the local store failed.
"""

from __future__ import annotations

import time

import trio

from dyncreds import logs
from dyncreds.aws.errors import GONE_CODES
from dyncreds.aws.iam_user import Propagation, wait_until_usable
from dyncreds.aws.rootkeys import StaticKeys
from dyncreds.aws.session import AwsSession
from dyncreds.journal import ROOT_KEY, Journal
from dyncreds.leases import Secret
from dyncreds.protocol import BadRequest, DyncredsError, Unavailable, Upstream

log = logs.get("aws")

ROOT_ROLE = "(root)"  # the journal's role name for a root key rotation
THING = ROOT_KEY
# A rotation record is never due while its rotation runs; recovery makes it due.
IN_PROGRESS_FOR = 7 * 86400.0
# Keys created this long before the record are not the rotation's (clock skew).
SKEW = 300.0


def user_name_from_arn(arn: str) -> str | None:
    """``arn:aws:iam::123456789012:user/path/name`` -> ``name``."""
    resource = arn.split(":", 5)[-1]
    if not resource.startswith("user/"):
        return None
    return resource.rsplit("/", 1)[-1]


def rotatable(aws: AwsSession) -> StaticKeys:
    """The current static key, or why this root cannot be rotated by the agent."""
    if aws.root.systemd_credential:
        raise BadRequest(
            "the root key is a systemd credential, which is read-only to the agent: create "
            "a new key, encrypt it with `systemd-creds encrypt`, and restart the unit "
            "(rotate-root rotates a credentials_file or keyring key)"
        )
    if (aws.credentials_path is None and not aws.root.keyring) or aws.static_keys is None:
        raise BadRequest(
            "rotate-root needs a root.credentials_file or root.keyring; profiles and the "
            "default credential chain are rotated by whatever manages them"
        )
    return aws.static_keys


async def root_user(aws: AwsSession) -> str:
    identity = await aws.call("sts", "get_caller_identity")
    user_name = user_name_from_arn(identity["Arn"])
    if user_name is None:
        raise BadRequest(f"the root identity {identity['Arn']} is not an IAM user")
    return user_name


async def key_created(aws: AwsSession) -> float:
    """When IAM created the current root key: the origin of ``rotate_every``."""
    current = rotatable(aws)
    user_name = await root_user(aws)
    listed = await aws.call("iam", "list_access_keys", UserName=user_name)
    for key in listed["AccessKeyMetadata"]:
        if key["AccessKeyId"] == current.access_key_id:
            return float(key["CreateDate"].timestamp())
    raise Upstream(
        f"the root key {current.access_key_id} is not among {user_name}'s access keys",
        aws_code="NoSuchEntity",
    )


async def held_key(aws: AwsSession) -> StaticKeys:
    """The key the root's store holds now, re-read (after any store error, the store
    decides); the clients switch to it if they used another. Unavailable (a local
    error) if the store cannot be read."""
    held = await trio.to_thread.run_sync(aws.read_store)
    current = aws.static_keys.access_key_id if aws.static_keys else None
    if held.access_key_id != current:
        log.warning("root.store_changed", held=held.access_key_id, was=current)
        await trio.to_thread.run_sync(aws.build)
    return held


async def rotate(
    aws: AwsSession, propagation: Propagation, journal: Journal, create_grace: float = 300.0
) -> str:
    rotatable(aws)
    _refuse_if_busy(journal)
    old = await held_key(aws)
    user_name = await root_user(aws)
    keys = (await aws.call("iam", "list_access_keys", UserName=user_name))["AccessKeyMetadata"]
    if len(keys) >= 2:
        others = ", ".join(k["AccessKeyId"] for k in keys if k["AccessKeyId"] != old.access_key_id)
        raise BadRequest(
            f"IAM user {user_name} already has two access keys; {aws.store_name()} holds "
            f"{old.access_key_id}: delete the other one ({others}) before rotating"
        )
    record = f"root-rotation/{old.access_key_id}"
    now = time.time()
    await journal.creating(
        record, ROOT_ROLE, user_name, now, now + IN_PROGRESS_FOR, thing=THING,
        detail=old.access_key_id,
    )  # fmt: skip
    try:
        created = (await aws.call("iam", "create_access_key", UserName=user_name))["AccessKey"]
    except Upstream as exc:
        if exc.created_nothing:
            await journal.forget(record)
        else:  # its answer was lost: the reaper deletes what it made, now and later
            await journal.abandon(record, time.time(), settle_until=time.time() + create_grace)
        raise Upstream(
            f"rotate-root failed at AWS, the old key {old.access_key_id} stays in use: "
            f"{exc.message}",
            aws_code=exc.aws_code,
        ) from None
    new = StaticKeys(created["AccessKeyId"], Secret(created["SecretAccessKey"]))
    await journal.key_created(record, new.access_key_id)
    log.info("root.rotate", step="created", new_key=new.access_key_id)
    await _prove_and_store(aws, propagation, journal, record, user_name, old, new)
    log.info("root.rotate", step="switched", new_key=new.access_key_id)
    try:
        await aws.call(
            "iam", "delete_access_key", UserName=user_name, AccessKeyId=old.access_key_id
        )
    except DyncredsError as exc:
        await journal.revoke_now(record, time.time())  # the reaper deletes it later
        raise Upstream(
            f"rotated to {new.access_key_id}; AWS did not delete the old key "
            f"{old.access_key_id} yet, the agent retries: {exc.message}",
            aws_code="RotateIncomplete",
        ) from None
    await journal.forget(record)
    log.info("root.rotate", step="done", old_key_deleted=old.access_key_id)
    return new.access_key_id


def _refuse_if_busy(journal: Journal) -> None:
    """One rotation at a time, across restarts: an unfinished one is finished first."""
    for row in journal.all():
        if row.thing == THING:
            raise Upstream(
                f"an earlier root rotation (from {row.detail}) is still being finished "
                f"({row.last_error or 'pending'}); retry when `dyncreds status` no longer "
                "lists it",
                aws_code="RotateInProgress",
            )


async def _prove_and_store(
    aws: AwsSession,
    propagation: Propagation,
    journal: Journal,
    record: str,
    user_name: str,
    old: StaticKeys,
    new: StaticKeys,
) -> None:
    """The new key works and the store holds it, then the clients switch to it -
    or the store still holds the old key and the new one is undone. Whatever a
    store error says, the store is read back and decides."""
    try:
        await wait_until_usable(aws, new.access_key_id, new.secret_access_key, propagation)
    except DyncredsError as exc:
        await _undo_new(aws, journal, record, user_name, new)
        raise Upstream(
            f"rotate-root failed at AWS: the new key {new.access_key_id} does not work "
            f"({exc.message}); it was deleted, the old key {old.access_key_id} stays in use",
            aws_code=getattr(exc, "aws_code", "RotateFailed"),
        ) from None
    try:
        await trio.to_thread.run_sync(aws.save_root_keys, new)
    except (DyncredsError, OSError) as exc:
        why = exc.message if isinstance(exc, DyncredsError) else (exc.strerror or str(exc))
        try:
            held = await trio.to_thread.run_sync(aws.read_store)
        except DyncredsError as unread:
            # Neither key is deleted while nobody knows which one the store holds:
            # the reaper finishes the rotation (keeping the held key) once it reads.
            await journal.revoke_now(record, time.time())
            raise Unavailable(
                f"rotate-root failed locally: writing {aws.store_name()} failed ({why}) and "
                f"it cannot be read back ({unread.message}); both keys are kept until it "
                "can, then the agent keeps the one it holds"
            ) from None
        if held.access_key_id != new.access_key_id:
            await _undo_new(aws, journal, record, user_name, new)
            raise Unavailable(
                f"rotate-root failed locally: writing {aws.store_name()} failed ({why}); "
                f"it still holds the old key {old.access_key_id}, which stays in use; the new "
                f"key {new.access_key_id} was deleted"
            ) from None
        log.warning("root.rotate", step="stored_despite_error", error=why)
    try:
        await trio.to_thread.run_sync(aws.build)  # re-reads the store: the new key from here on
    except DyncredsError as exc:
        await journal.revoke_now(record, time.time())  # finished once the store reads
        raise Unavailable(
            f"rotate-root failed locally: {aws.store_name()} holds the new key "
            f"{new.access_key_id} but cannot be read back ({exc.message}); both keys are kept "
            "until it can, then the agent keeps the one it holds"
        ) from None


async def _undo_new(
    aws: AwsSession, journal: Journal, record: str, user_name: str, new: StaticKeys
) -> None:
    """Delete the new key (the store holds the old one); the reaper retries."""
    try:
        await aws.call(
            "iam", "delete_access_key", UserName=user_name, AccessKeyId=new.access_key_id
        )
        await journal.forget(record)
    except DyncredsError:
        await journal.revoke_now(record, time.time())


async def finish_interrupted(aws: AwsSession, user_name: str, old_key: str, since: float) -> bool:
    """After a rotation that did not finish: keep the key the store holds, delete
    the other (the old key, or a key created by the rotation). Keys the operator
    made before the rotation are never touched. True if something was deleted."""
    if aws.static_keys is None:
        raise BadRequest("an interrupted root rotation needs the root's static key to finish")
    # The store decides, not memory: a write whose answer was lost may have landed.
    current = (await held_key(aws)).access_key_id
    try:
        listed = await aws.call("iam", "list_access_keys", UserName=user_name)
    except Upstream as exc:
        if exc.aws_code in GONE_CODES:
            return False
        raise
    extra = [
        k["AccessKeyId"]
        for k in listed["AccessKeyMetadata"]
        if k["AccessKeyId"] != current
        and (k["AccessKeyId"] == old_key or k["CreateDate"].timestamp() >= since - SKEW)
    ]
    for key_id in extra:
        try:
            await aws.call("iam", "delete_access_key", UserName=user_name, AccessKeyId=key_id)
        except Upstream as exc:
            if exc.aws_code not in GONE_CODES:
                raise
        log.info("root.rotate", step="cleaned_up", deleted_key=key_id, kept_key=current)
    return bool(extra)
