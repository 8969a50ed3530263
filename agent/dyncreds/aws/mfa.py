"""The root's MFA session: opening it, and the calls only the long-term key may sign.

With ``[root] mfa_serial`` the long-lived root key signs GetSessionToken (with
the code) and the calls AWS accepts only from long-term keys; everything else
is signed by the session that returns, for ``unlock_for``. An unlock never
claims a session AWS does not accept: GetCallerIdentity signed by it first.

Whether the root may act now is not decided here: the agent's keeper
(keeper.py) answers it from the agent's clock, and the session asks it before
every call (``RootGate``); which client signs a call is session.py's choice. A
session outside the agent (the CLI) never unlocks (``NeverUnlocked``).
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from dyncreds import logs
from dyncreds.aws.calls import Caller
from dyncreds.aws.clients import ClientFactory
from dyncreds.config import RootSettings
from dyncreds.leases import Secret
from dyncreds.protocol import BadRequest, Locked, Upstream
from dyncreds.rootlock import RootLock

log = logs.get("aws")

# AWS accepts these only from long-term credentials, never from an MFA session:
# with mfa_serial they use the root key itself, and only while unlocked.
LONG_TERM_ONLY = frozenset({"get_session_token", "get_federation_token"})

MfaKeys = tuple[str, Secret, Secret]  # the MFA session's key id, secret, token


class RootGate(Protocol):
    """Who decides whether the root may act now (keeper.RootKeeper, on the agent's
    clock). Asked before every call the MFA session signs."""

    def may_act(self) -> None:
        """Raise ``Locked`` (with what to do) unless AWS calls may be made now."""

    def session_ended(self) -> Locked:
        """AWS refused the MFA session: locked from now on; the error to raise."""


class NeverUnlocked:
    """The gate of a session outside the agent (the CLI, the stand-in): it never
    unlocks, so with ``mfa_serial`` its root never acts."""

    def __init__(self, mfa_serial: str | None):
        self.lock = RootLock(mfa_serial)

    def may_act(self) -> None:
        if self.lock.enabled:
            raise Locked(self.lock.why(0.0))  # never unlocked: no time in the answer

    def session_ended(self) -> Locked:
        return Locked(self.lock.why(0.0))


class MfaSession:
    """The MFA session's keys (None until an unlock, and after a lock)."""

    def __init__(self, root: RootSettings, previous: MfaSession | None = None):
        self.root = root
        self.keys: MfaKeys | None = None
        if previous is not None and previous.root.mfa_serial == root.mfa_serial:
            # A reload keeps the unlock: the MFA session does not depend on the file.
            self.keys = previous.keys

    @property
    def enabled(self) -> bool:
        return self.root.mfa_serial is not None

    def not_open(self) -> Locked:
        """The error of a call with no MFA session (never unlocked here, or a reload
        changed the device and the keeper has yet to hear of it)."""
        return Locked(RootLock(self.root.mfa_serial).why(0.0))  # never unlocked: no time

    def signs_long_term(self, service: str, operation: str) -> bool:
        """Is this call signed by the root key itself rather than the session?"""
        return service == "sts" and operation in LONG_TERM_ONLY

    async def open(
        self, code: str, long_sts: Any, caller: Caller, factory: ClientFactory
    ) -> tuple[MfaKeys, float]:
        """GetSessionToken with the MFA code, signed by the root key, then proven:
        the session's keys and when it ends (AWS's ``Expiration``)."""
        if not self.enabled:
            raise BadRequest("unlock needs root.mfa_serial in config.toml; this agent has no lock")
        if not (code.isascii() and code.isdigit()) or len(code) != 6:
            raise BadRequest("the MFA code is the 6 digits your device shows now")
        result = await caller.call(
            long_sts,
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
        await _prove(keys, caller, factory)
        return keys, float(creds["Expiration"].timestamp())


async def _prove(keys: MfaKeys, caller: Caller, factory: ClientFactory) -> None:
    """GetCallerIdentity signed by the new MFA session: an unlock never claims a
    session AWS does not accept."""
    client = await trio.to_thread.run_sync(factory.client_for_keys, "sts", *keys)
    try:
        await caller.call(client, "get_caller_identity")
    except Upstream as exc:
        log.error("root.unlock_rejected", aws_code=exc.aws_code, error=exc.message)
        raise Upstream(
            f"unlock failed: AWS rejected the MFA session it had just issued "
            f"({exc.aws_code}); the agent stays locked. Check that [root] sts_endpoint "
            "and iam_endpoint are the same AWS, then run `dyncreds unlock` again",
            aws_code=exc.aws_code,
        ) from None
