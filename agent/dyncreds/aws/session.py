"""The root identity: its key store, its clients, and ``call``, the one way the
agent calls AWS as the root.

One shared client per service (clients are thread-safe; Sessions are not),
rebuilt when the configuration or the MFA session changes, built in a worker
thread (clients.py). Which key signs a call is decided here: with
``[root] mfa_serial`` the MFA session's (mfa.py), after asking the keeper's gate
whether the root may act now; AWS refusing that session locks the agent. Each
call runs in a worker thread, bounded (calls.py); an AWS refusal of the root key
itself is said once, with what to do (``root_problem``).
"""

from __future__ import annotations

import threading
from typing import Any

import trio

from dyncreds.aws.attempts import BotoHook
from dyncreds.aws.calls import Caller
from dyncreds.aws.clients import ClientFactory
from dyncreds.aws.errors import ROOT_REJECTED_CODES, RootRefreshFailed
from dyncreds.aws.mfa import MfaSession, NeverUnlocked, RootGate
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
from dyncreds.protocol import Unavailable, Upstream


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
        root_gate: RootGate | None = None,
    ):
        """``root_gate``: the keeper's answer to "may the root act now" (a session
        outside the agent never unlocks); ``previous``: the session a reload
        replaces (its MFA session is kept)."""
        self.root: RootSettings = config.main.root
        self.credentials_path = config.credentials_file()
        self.caller = Caller(
            call_timeout=call_timeout, concurrency=concurrency, max_retries=self.root.max_retries
        )
        self.factory = ClientFactory(
            self.root,
            config.main.fleet,
            call_timeout=call_timeout,
            pool=concurrency,
            event_hooks=list(event_hooks or []),
        )
        self.root_gate: RootGate = root_gate or NeverUnlocked(self.root.mfa_serial)
        self.mfa: MfaSession = MfaSession(self.root, previous.mfa if previous else None)
        self._lock = threading.Lock()
        self.static_keys: StaticKeys | None = None
        self.root_problem: str | None = None  # set while AWS rejects the root
        self.iam: Any = None
        self.sts: Any = None
        self.dynamodb: Any = None  # the fleet's table (signed by the root), with [fleet]
        self._long_sts: Any = None  # the root key's own STS client
        self.build()

    @property
    def limiter(self) -> trio.CapacityLimiter:
        return self.caller.limiter

    # ------------------------------------------------------------------ the key store

    def _stored(self) -> bool:
        """Is the root's key in a store of ours (else: a boto3 profile)?"""
        return bool(
            self.credentials_path is not None or self.root.systemd_credential or self.root.keyring
        )

    def read_store(self) -> StaticKeys:
        """What the root's store holds now (blocking: D-Bus for a keyring)."""
        if self.credentials_path is not None:
            return read_credentials_file(self.credentials_path)
        if self.root.keyring:
            return read_keyring(self.root.keyring)
        return read_systemd_credential(str(self.root.systemd_credential))

    def store_name(self) -> str:
        if self.credentials_path is not None:
            return f"the root credentials file {self.credentials_path}"
        if self.root.keyring:
            return f"the keyring item dyncreds/{self.root.keyring}"
        return f"the systemd credential {self.root.systemd_credential}"

    def save_root_keys(self, keys: StaticKeys) -> None:
        """Write a rotated root key back where the old one was (atomically)."""
        if self.credentials_path is not None:
            write_credentials_file(self.credentials_path, keys)
        elif self.root.keyring:
            write_keyring(self.root.keyring, keys)
        else:
            raise Unavailable("this root's key store cannot be written by the agent")

    def root_key_id(self) -> str:
        if self.static_keys is not None:
            return self.static_keys.access_key_id
        return f"(profile {self.root.profile or 'default'})"

    # ------------------------------------------------------------------ clients

    def build(self) -> None:
        """(Re)create the clients from the configured root credentials (and, with
        MFA, from the unlocked session: the root key then signs only STS calls).
        Blocking: tens of milliseconds of CPU."""
        if self._stored():
            self.static_keys = self.read_store()
        session = self.factory.root_session(self.static_keys if self._stored() else None)
        iam, sts = self.factory.iam_sts(session)
        dynamodb = self.factory.dynamodb(session)
        mfa_iam = mfa_sts = None
        if self.mfa.keys is not None:
            mfa_iam, mfa_sts = self.factory.iam_sts(self.factory.mfa_session(*self.mfa.keys))
        with self._lock:
            self._long_sts = sts
            self.dynamodb = dynamodb
            if self.mfa.enabled:
                self.iam, self.sts = mfa_iam, mfa_sts
            else:
                self.iam, self.sts = iam, sts

    def client_for_keys(
        self, service: str, access_key_id: str, secret: Secret, token: Secret | None = None
    ) -> Any:
        """A client acting as some other credentials (a new key being proven)."""
        return self.factory.client_for_keys(service, access_key_id, secret, token)

    # ------------------------------------------------------------------ MFA

    async def unlock(self, code: str) -> float:
        """Open an MFA session (mfa.py); from then on every other call is signed by
        it. Returns when it ends. The keeper fences it against a `lock`."""
        keys, until = await self.mfa.open(code, self._long_sts, self.caller, self.factory)
        self.mfa.keys = keys
        # Building clients takes tens of milliseconds of CPU: not on the event loop.
        await trio.to_thread.run_sync(self.build)
        return until

    def forget_session(self) -> None:
        """`dyncreds lock`: the MFA session's keys and clients are dropped."""
        self.mfa.keys = None
        with self._lock:
            self.iam = self.sts = None

    def require_unlocked(self) -> None:
        """Raise ``Locked`` (with what to do) unless the keeper says the root may act."""
        self.root_gate.may_act()

    # ------------------------------------------------------------------ calls

    def _client_for(self, service: str, operation: str) -> Any:
        if self.mfa.enabled:
            self.root_gate.may_act()
            if self.mfa.signs_long_term(service, operation):
                return self._long_sts
            if self.mfa.keys is None:
                raise self.mfa.not_open()
        return self.iam if service == "iam" else self.sts

    async def call(self, service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        """Run one AWS operation (snake_case name) as the root, in a worker thread,
        bounded. A root AWS refuses to recognise is said so, with what to do."""
        client = self._client_for(service, operation)
        try:
            result = await self.caller.call(client, operation, **params)
        except RootRefreshFailed as exc:
            self.root_problem = exc.message
            raise
        except Upstream as exc:
            if exc.aws_code not in ROOT_REJECTED_CODES:
                raise
            if self.mfa.enabled and client is not self._long_sts:
                # The MFA session itself was refused: it ended, or was revoked.
                raise self.root_gate.session_ended() from None
            self.root_problem = (
                f"the agent's root key {self.root_key_id()} was rejected by AWS "
                f"({exc.aws_code}): run `dyncreds configure root`"
            )
            raise Upstream(self.root_problem, aws_code=exc.aws_code, sent=exc.sent) from None
        self.root_problem = None
        return result

    async def call_client(self, client: Any, operation: str, /, **params: Any) -> dict[str, Any]:
        """Run one operation on a client of the caller's (a key being proven, the
        fleet's table), in a worker thread, bounded; no gate, no root mapping."""
        return await self.caller.call(client, operation, **params)
