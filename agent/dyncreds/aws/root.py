"""rotate-root: replace the agent's own static access key, Vault's config/rotate-root.

Order matters, so that a failure at any step leaves a working root and at most
one extra key: journal the rotation, create the new key, prove it works, write
it to the store atomically, switch the clients, delete the old key, forget the
journal record. A SIGKILL anywhere leaves the record in 'creating', which
recovery makes due at the next start: ``finish_interrupted`` then keeps the key
the store holds and deletes the other one (the old key, or a new key whose
secret died with the process).
"""

from __future__ import annotations

import time

from dyncreds import logs
from dyncreds.aws.iam_user import Propagation, wait_until_usable
from dyncreds.aws.rootkeys import StaticKeys
from dyncreds.aws.session import GONE_CODES, AwsSession
from dyncreds.journal import Journal
from dyncreds.leases import Secret
from dyncreds.protocol import BadRequest, DyncredsError, Upstream

log = logs.get("aws")

ROOT_ROLE = "(root)"  # the journal's role name for a root key rotation
THING = "root_key"
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


async def rotate(aws: AwsSession, propagation: Propagation, journal: Journal) -> str:
    old = rotatable(aws)
    user_name = await root_user(aws)
    keys = (await aws.call("iam", "list_access_keys", UserName=user_name))["AccessKeyMetadata"]
    if len(keys) >= 2:
        others = ", ".join(k["AccessKeyId"] for k in keys if k["AccessKeyId"] != old.access_key_id)
        raise BadRequest(
            f"IAM user {user_name} already has two access keys; delete the unused "
            f"one ({others}) before rotating"
        )
    record = f"root-rotation/{old.access_key_id}"
    now = time.time()
    await journal.creating(
        record,
        ROOT_ROLE,
        user_name,
        now,
        now + IN_PROGRESS_FOR,
        thing=THING,
        detail=old.access_key_id,
    )
    try:
        created = (await aws.call("iam", "create_access_key", UserName=user_name))["AccessKey"]
    except DyncredsError:
        # Maybe created (the answer was lost): recovery-style cleanup, now.
        await journal.revoke_now(record, now)
        raise
    new = StaticKeys(created["AccessKeyId"], Secret(created["SecretAccessKey"]))
    await journal.key_created(record, new.access_key_id)
    log.info("root.rotate", step="created", new_key=new.access_key_id)
    try:
        await wait_until_usable(aws, new.access_key_id, new.secret_access_key, propagation)
        aws.save_root_keys(new)  # the file or keyring item the old key came from
    except (DyncredsError, OSError) as exc:
        # The old key still works and the store still names it: undo the new key.
        try:
            await aws.call(
                "iam", "delete_access_key", UserName=user_name, AccessKeyId=new.access_key_id
            )
            await journal.forget(record)
            extra = ""
        except DyncredsError:
            await journal.revoke_now(record, time.time())  # the reaper keeps trying
            extra = f"; the new key {new.access_key_id} will be deleted when AWS allows"
        raise Upstream(
            f"rotate-root failed before switching keys, the old key stays in use: {exc}{extra}",
            aws_code=getattr(exc, "aws_code", "RotateFailed"),
        ) from None
    aws.build()  # re-reads the store: from here on the agent uses the new key
    log.info("root.rotate", step="switched", new_key=new.access_key_id)
    try:
        await aws.call(
            "iam", "delete_access_key", UserName=user_name, AccessKeyId=old.access_key_id
        )
    except DyncredsError as exc:
        await journal.revoke_now(record, time.time())  # the reaper deletes it later
        raise Upstream(
            f"rotated to {new.access_key_id}; the old key {old.access_key_id} could not be "
            f"deleted yet and will be retried: {exc}",
            aws_code="RotateIncomplete",
        ) from None
    await journal.forget(record)
    log.info("root.rotate", step="done", old_key_deleted=old.access_key_id)
    return new.access_key_id


async def finish_interrupted(aws: AwsSession, user_name: str, old_key: str, since: float) -> bool:
    """After a rotation that did not finish: keep the key the store holds, delete
    the other (the old key, or a key created by the rotation). Keys the operator
    made before the rotation are never touched. True if something was deleted."""
    current = aws.static_keys.access_key_id if aws.static_keys else None
    if current is None:
        raise BadRequest("an interrupted root rotation needs the root's static key to finish")
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
