"""rotate-root: replace the agent's own static access key, Vault's config/rotate-root.

Order matters, so that a failure at any step leaves a working root and at most
one extra key: create the new key, prove it works, write the credentials file
atomically, switch the clients, and only then delete the old key.
"""

from __future__ import annotations

from dyncreds import logs
from dyncreds.aws.iam_user import Propagation, wait_until_usable
from dyncreds.aws.rootkeys import StaticKeys
from dyncreds.aws.session import AwsSession
from dyncreds.leases import Secret
from dyncreds.protocol import BadRequest, DyncredsError, Upstream

log = logs.get("aws")


def user_name_from_arn(arn: str) -> str | None:
    """``arn:aws:iam::123456789012:user/path/name`` -> ``name``."""
    resource = arn.split(":", 5)[-1]
    if not resource.startswith("user/"):
        return None
    return resource.rsplit("/", 1)[-1]


async def rotate(aws: AwsSession, propagation: Propagation) -> str:
    path = aws.credentials_path
    old = aws.static_keys
    if aws.root.systemd_credential:
        raise BadRequest(
            "the root key is a systemd credential, which is read-only to the agent: create "
            "a new key, encrypt it with `systemd-creds encrypt`, and restart the unit "
            "(rotate-root rotates a credentials_file)"
        )
    if (path is None and not aws.root.keyring) or old is None:
        raise BadRequest(
            "rotate-root needs a root.credentials_file or root.keyring; profiles and the "
            "default credential chain are rotated by whatever manages them"
        )
    identity = await aws.call("sts", "get_caller_identity")
    user_name = user_name_from_arn(identity["Arn"])
    if user_name is None:
        raise BadRequest(f"the root identity {identity['Arn']} is not an IAM user")
    keys = (await aws.call("iam", "list_access_keys", UserName=user_name))["AccessKeyMetadata"]
    if len(keys) >= 2:
        others = ", ".join(k["AccessKeyId"] for k in keys if k["AccessKeyId"] != old.access_key_id)
        raise BadRequest(
            f"IAM user {user_name} already has two access keys; delete the unused "
            f"one ({others}) before rotating"
        )
    created = (await aws.call("iam", "create_access_key", UserName=user_name))["AccessKey"]
    new = StaticKeys(created["AccessKeyId"], Secret(created["SecretAccessKey"]))
    log.info("root.rotate", step="created", new_key=new.access_key_id)
    try:
        await wait_until_usable(aws, new.access_key_id, new.secret_access_key, propagation)
        aws.save_root_keys(new)  # the file or keyring item the old key came from
    except (DyncredsError, OSError) as exc:
        # The old key still works and the file still names it: undo the new key.
        try:
            await aws.call(
                "iam", "delete_access_key", UserName=user_name, AccessKeyId=new.access_key_id
            )
            extra = ""
        except DyncredsError:
            extra = f"; the new key {new.access_key_id} could not be deleted, delete it by hand"
        raise Upstream(
            f"rotate-root failed before switching keys, the old key stays in use: {exc}{extra}",
            aws_code=getattr(exc, "aws_code", "RotateFailed"),
        ) from None
    aws.build()  # re-reads the file: from here on the agent uses the new key
    log.info("root.rotate", step="switched", new_key=new.access_key_id)
    try:
        await aws.call(
            "iam", "delete_access_key", UserName=user_name, AccessKeyId=old.access_key_id
        )
    except DyncredsError as exc:
        raise Upstream(
            f"rotated to {new.access_key_id}, but the old key {old.access_key_id} "
            f"could not be deleted: {exc}",
            aws_code="RotateIncomplete",
        ) from None
    log.info("root.rotate", step="done", old_key_deleted=old.access_key_id)
    return new.access_key_id
