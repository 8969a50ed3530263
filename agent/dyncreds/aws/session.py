"""The root identity, its boto3 clients, and the one way to call AWS.

boto3 is blocking, so every call runs in a worker thread under one shared
``CapacityLimiter`` (``aws_concurrency``), with one shared client per service
(clients are thread-safe; Sessions are not). Every call's time is bounded twice:
botocore's connect/read timeouts for each HTTP attempt, and a trio deadline for
the call with all its retries, so a client never hangs on a sick AWS.

Exceptions are mapped to dyncreds errors in one place, ``errors.map_errors``;
what botocore does per attempt is watched in ``attempts``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import trio

from dyncreds import logs
from dyncreds.aws.attempts import Attempts, BotoHook, local, register
from dyncreds.aws.errors import GONE_CODES as GONE_CODES
from dyncreds.aws.errors import ROOT_REJECTED_CODES, RootRefreshFailed
from dyncreds.aws.errors import aws_code as aws_code
from dyncreds.aws.errors import map_errors as map_errors
from dyncreds.aws.rootkeys import (
    StaticKeys,
    read_credentials_file,
    read_keyring,
    read_systemd_credential,
    write_credentials_file,
    write_keyring,
)
from dyncreds.config import Config, RootSettings
from dyncreds.leases import Secret
from dyncreds.protocol import BadRequest, Locked, Unavailable, Upstream
from dyncreds.rootlock import RootLock

log = logs.get("aws")

CONNECT_TIMEOUT = 5

# AWS accepts these only from long-term credentials, never from an MFA session:
# with mfa_serial they use the root key itself, and only while unlocked.
LONG_TERM_ONLY = frozenset({"get_session_token", "get_federation_token"})
OVERTAKEN = (
    "`dyncreds lock` came while this unlock was in flight, and wins: the agent stays "
    "locked; run `dyncreds unlock` again"
)
# Creates that are not idempotent: an attempt whose answer was lost may have
# created something, so botocore must not send another (a second key nobody
# would journal); the caller reconciles instead (list, delete what is unknown).
SEND_ONCE = frozenset({"create_access_key"})


def profile_loops(profile: str | None) -> bool:
    """Would this profile's credential_process run dyncreds-shim (and so ask us)?"""
    session = boto3.Session()
    profiles = session._session.full_config.get("profiles", {})
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    process = profiles.get(name, {}).get("credential_process", "")
    return "dyncreds-shim" in process


class AwsSession:
    """The root identity's IAM and STS clients, and ``call`` to use them."""

    def __init__(
        self,
        config: Config,
        *,
        call_timeout: float,
        concurrency: int,
        event_hooks: list[tuple[str, BotoHook]] | None = None,
        previous: AwsSession | None = None,
    ):
        self.root: RootSettings = config.main.root
        self.credentials_path = config.credentials_file()
        self.call_timeout = call_timeout
        self.limiter = trio.CapacityLimiter(concurrency)
        self.event_hooks = list(event_hooks or [])
        self._lock = threading.Lock()
        self.static_keys: StaticKeys | None = None
        self.root_problem: str | None = None  # set while AWS rejects the root
        self.iam: Any = None
        self.sts: Any = None
        self.dynamodb: Any = None  # the fleet's table (signed by the root), with [fleet]
        self.fleet = config.main.fleet
        self._long_sts: Any = None  # the root key's own STS client
        self.lock = RootLock(self.root.mfa_serial)
        self._mfa_keys: tuple[str, Secret, Secret] | None = None  # the MFA session's
        if previous is not None and previous.root.mfa_serial == self.root.mfa_serial:
            # A reload keeps the unlock: the MFA session does not depend on the file.
            self.lock, self._mfa_keys = previous.lock, previous._mfa_keys
        self.build()

    def _botocore_config(self) -> botocore.config.Config:
        return botocore.config.Config(
            region_name=self.root.region,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=max(1, int(self.call_timeout)),
            retries={"mode": "standard", "total_max_attempts": self.root.max_retries + 1},
            max_pool_connections=max(10, int(self.limiter.total_tokens) * 2),
        )

    def _session(self) -> boto3.Session:
        if self.credentials_path is not None or self.root.systemd_credential or self.root.keyring:
            self.static_keys = self._read_root_keys()
            return boto3.Session(
                aws_access_key_id=self.static_keys.access_key_id,
                aws_secret_access_key=self.static_keys.secret_access_key.reveal(),
                region_name=self.root.region,
            )
        if profile_loops(self.root.profile):
            raise Unavailable(
                f"root profile {self.root.profile or 'default'!r} uses dyncreds-shim as its "
                "credential_process; the agent would ask itself for its own keys"
            )
        with map_errors("session"):
            return boto3.Session(profile_name=self.root.profile, region_name=self.root.region)

    def read_store(self) -> StaticKeys:
        """What the root's store holds now (blocking: D-Bus for a keyring)."""
        return self._read_root_keys()

    def store_name(self) -> str:
        if self.credentials_path is not None:
            return f"the root credentials file {self.credentials_path}"
        if self.root.keyring:
            return f"the keyring item dyncreds/{self.root.keyring}"
        return f"the systemd credential {self.root.systemd_credential}"

    def _read_root_keys(self) -> StaticKeys:
        """The root's static key, from wherever [root] says it is kept."""
        if self.credentials_path is not None:
            return read_credentials_file(self.credentials_path)
        if self.root.keyring:
            return read_keyring(self.root.keyring)
        return read_systemd_credential(str(self.root.systemd_credential))

    def save_root_keys(self, keys: StaticKeys) -> None:
        """Write a rotated root key back where the old one was (atomically)."""
        if self.credentials_path is not None:
            write_credentials_file(self.credentials_path, keys)
        elif self.root.keyring:
            write_keyring(self.root.keyring, keys)
        else:
            raise Unavailable("this root's key store cannot be written by the agent")

    def build(self) -> None:
        """(Re)create the clients from the configured root credentials (and, with
        MFA, from the unlocked session: the root key then signs only STS calls)."""
        session = self._session()
        iam, sts = self._clients(session)
        dynamodb = None
        if self.fleet is not None:
            dynamodb = register(
                session.client(
                    "dynamodb",
                    endpoint_url=self.fleet.endpoint,
                    region_name=self.fleet.region,
                    config=self._botocore_config(),
                ),
                self.event_hooks,
            )
        mfa_iam = mfa_sts = None
        if self._mfa_keys is not None:
            key_id, secret, token = self._mfa_keys
            mfa_iam, mfa_sts = self._clients(
                boto3.Session(
                    aws_access_key_id=key_id,
                    aws_secret_access_key=secret.reveal(),
                    aws_session_token=token.reveal(),
                    region_name=self.root.region,
                )
            )
        with self._lock:
            self._long_sts = sts
            self.dynamodb = dynamodb
            if self.lock.enabled:
                self.iam, self.sts = mfa_iam, mfa_sts
            else:
                self.iam, self.sts = iam, sts

    def _clients(self, session: boto3.Session) -> tuple[Any, Any]:
        config = self._botocore_config()
        iam = session.client("iam", endpoint_url=self.root.iam_endpoint, config=config)
        sts = session.client("sts", endpoint_url=self.root.sts_endpoint, config=config)
        return register(iam, self.event_hooks), register(sts, self.event_hooks)

    # ------------------------------------------------------------------ MFA lock

    def require_unlocked(self) -> None:
        """Raise ``Locked`` (with what to do) unless AWS calls may be made now."""
        now = time.time()
        if self.lock.locked(now):
            raise Locked(self.lock.why(now))

    async def unlock(self, code: str) -> float:
        """GetSessionToken with the MFA code, signed by the root key; from then on
        every other call is signed by that session. Returns when it ends."""
        if not self.lock.enabled:
            raise BadRequest("unlock needs root.mfa_serial in config.toml; this agent has no lock")
        if not (code.isascii() and code.isdigit()) or len(code) != 6:
            raise BadRequest("the MFA code is the 6 digits your device shows now")
        epoch = self.lock.epoch  # a `lock` from now on wins over this unlock
        result = await self.call_client(
            self._long_sts,
            "get_session_token",
            SerialNumber=self.root.mfa_serial,
            TokenCode=code,
            DurationSeconds=int(self.root.unlock_for),
        )
        creds = result["Credentials"]
        keys = (
            creds["AccessKeyId"],
            Secret(creds["SecretAccessKey"]),
            Secret(creds["SessionToken"]),
        )
        await self._prove_session(*keys)
        if self.lock.epoch != epoch:
            raise Locked(OVERTAKEN)
        self._mfa_keys = keys
        # Building clients takes tens of milliseconds of CPU: not on the event loop.
        await trio.to_thread.run_sync(self.build)
        if self.lock.epoch != epoch:  # a lock came while the clients were built
            self.forget_session()
            raise Locked(OVERTAKEN)
        until = float(creds["Expiration"].timestamp())
        self.lock.unlocked(until)
        return until

    async def _prove_session(self, key_id: str, secret: Secret, token: Secret) -> None:
        """GetCallerIdentity signed by the new MFA session: an unlock never claims a
        session AWS does not accept."""
        client = await trio.to_thread.run_sync(self.client_for_keys, "sts", key_id, secret, token)
        try:
            await self.call_client(client, "get_caller_identity")
        except Upstream as exc:
            log.error("root.unlock_rejected", aws_code=exc.aws_code, error=exc.message)
            raise Upstream(
                f"unlock failed: AWS rejected the MFA session it had just issued "
                f"({exc.aws_code}); the agent stays locked. Check that [root] sts_endpoint "
                "and iam_endpoint are the same AWS, then run `dyncreds unlock` again",
                aws_code=exc.aws_code,
            ) from None

    def forget_session(self) -> None:
        """`dyncreds lock`: the MFA session is dropped and every request refused."""
        self.lock.lock()
        self._mfa_keys = None
        with self._lock:
            self.iam = self.sts = None

    def _client_for(self, service: str, operation: str) -> Any:
        if not self.lock.enabled:
            return self.iam if service == "iam" else self.sts
        self.require_unlocked()
        if service == "sts" and operation in LONG_TERM_ONLY:
            return self._long_sts
        return self.iam if service == "iam" else self.sts

    def client_for_keys(
        self, service: str, access_key_id: str, secret: Secret, token: Secret | None = None
    ) -> Any:
        """A client acting as some other credentials (a new key being proven)."""
        endpoint = self.root.sts_endpoint if service == "sts" else self.root.iam_endpoint
        client = boto3.Session().client(
            service,  # type: ignore[call-overload]
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret.reveal(),
            aws_session_token=token.reveal() if token else None,
            endpoint_url=endpoint,
            region_name=self.root.region,
            # One attempt: the caller decides how to retry a key that is not live yet.
            config=botocore.config.Config(
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=max(1, int(self.call_timeout)),
                retries={"mode": "standard", "total_max_attempts": 1},
            ),
        )
        return register(client, self.event_hooks)

    async def call(self, service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        """Run one AWS operation (snake_case name) as the root, in a worker thread,
        bounded. A root AWS refuses to recognise is said so, with what to do."""
        client = self._client_for(service, operation)
        try:
            result = await self.call_client(client, operation, **params)
        except RootRefreshFailed as exc:
            self.root_problem = exc.message
            raise
        except Upstream as exc:
            if exc.aws_code not in ROOT_REJECTED_CODES:
                raise
            if self.lock.enabled and client is not self._long_sts:
                # The MFA session itself was refused: it ended, or was revoked.
                self.lock.ended()
                raise Locked(self.lock.why(time.time())) from None
            self.root_problem = (
                f"the agent's root key {self.root_key_id()} was rejected by AWS "
                f"({exc.aws_code}): run `dyncreds configure root`"
            )
            raise Upstream(self.root_problem, aws_code=exc.aws_code, sent=exc.sent) from None
        self.root_problem = None
        return result

    def root_key_id(self) -> str:
        if self.static_keys is not None:
            return self.static_keys.access_key_id
        return f"(profile {self.root.profile or 'default'})"

    async def call_client(self, client: Any, operation: str, /, **params: Any) -> dict[str, Any]:
        method = getattr(client, operation)
        attempts = Attempts(once=operation in SEND_ONCE)

        def run() -> dict[str, Any]:
            local.attempts = attempts
            try:
                result: dict[str, Any] = method(**params)
                return result
            finally:
                local.attempts = None

        started = time.monotonic()
        outcome = "error"
        try:
            with map_errors(_camel(operation)):
                with trio.fail_after(self.call_timeout * (self.root.max_retries + 1)):
                    result = await trio.to_thread.run_sync(
                        run, limiter=self.limiter, abandon_on_cancel=True
                    )
            outcome = "ok"
        except BaseException as exc:
            # Whoever waited has given up: the worker thread, which may still be in
            # botocore's retry loop, must not send another attempt (a CreateUser
            # nobody would journal). The attempt in flight ends at its read timeout.
            attempts.abandoned = True
            if isinstance(exc, Upstream):
                outcome = exc.aws_code
                exc.sent = attempts.sent
            raise
        finally:
            # Operation names and outcomes only: parameters and responses can hold
            # secrets (CreateAccessKey), so they are never logged.
            log.debug(
                "aws.call",
                op=_camel(operation),
                outcome=outcome,
                seconds=round(time.monotonic() - started, 3),
            )
        return result


def _camel(operation: str) -> str:
    return "".join(part.title() for part in operation.split("_"))
