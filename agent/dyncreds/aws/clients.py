"""Building the root's boto3 clients.

Building a boto3 session or client costs tens of milliseconds of CPU, so the
agent does it in a worker thread, never on the event loop (tests/test_shape.py
checks every coroutine under aws/). One botocore configuration for the root's
clients: connect/read timeouts per attempt, botocore's standard retry mode, a
connection pool sized for the call limiter. The root's key comes from its store
(rootkeys.py) or from a boto3 profile - never one whose ``credential_process``
is dyncreds-shim itself, which would ask the agent for its own keys.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
import botocore.config

from dyncreds.aws.attempts import BotoHook, register
from dyncreds.aws.errors import map_errors
from dyncreds.aws.rootkeys import StaticKeys
from dyncreds.config import FleetSettings, RootSettings
from dyncreds.leases import Secret
from dyncreds.protocol import Unavailable

CONNECT_TIMEOUT = 5


def profile_loops(profile: str | None) -> bool:
    """Would this profile's credential_process run dyncreds-shim (and so ask us)?"""
    session = boto3.Session()
    profiles = session._session.full_config.get("profiles", {})
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    process = profiles.get(name, {}).get("credential_process", "")
    return "dyncreds-shim" in process


class ClientFactory:
    """Makes the root's clients (blocking: call it in a worker thread)."""

    def __init__(
        self,
        root: RootSettings,
        fleet: FleetSettings | None,
        *,
        call_timeout: float,
        pool: int,
        event_hooks: list[tuple[str, BotoHook]],
    ):
        self.root = root
        self.fleet = fleet
        self.call_timeout = call_timeout
        self.pool = pool
        self.event_hooks = event_hooks

    def botocore_config(self) -> botocore.config.Config:
        return botocore.config.Config(
            region_name=self.root.region,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=max(1, int(self.call_timeout)),
            retries={"mode": "standard", "total_max_attempts": self.root.max_retries + 1},
            max_pool_connections=max(10, self.pool * 2),
        )

    def root_session(self, keys: StaticKeys | None) -> boto3.Session:
        """The root's boto3 Session: its stored key, or (``keys`` None) its profile."""
        if keys is not None:
            return boto3.Session(
                aws_access_key_id=keys.access_key_id,
                aws_secret_access_key=keys.secret_access_key.reveal(),
                region_name=self.root.region,
            )
        if profile_loops(self.root.profile):
            raise Unavailable(
                f"root profile {self.root.profile or 'default'!r} uses dyncreds-shim as its "
                "credential_process; the agent would ask itself for its own keys"
            )
        with map_errors("session"):
            return boto3.Session(profile_name=self.root.profile, region_name=self.root.region)

    def mfa_session(self, key_id: str, secret: Secret, token: Secret) -> boto3.Session:
        """A Session signed by the MFA session's keys (with ``[root] mfa_serial``)."""
        return boto3.Session(
            aws_access_key_id=key_id,
            aws_secret_access_key=secret.reveal(),
            aws_session_token=token.reveal(),
            region_name=self.root.region,
        )

    def iam_sts(self, session: boto3.Session) -> tuple[Any, Any]:
        """IAM and STS clients of a Session, at the configured endpoints."""
        config = self.botocore_config()
        iam = session.client("iam", endpoint_url=self.root.iam_endpoint, config=config)
        sts = session.client("sts", endpoint_url=self.root.sts_endpoint, config=config)
        return register(iam, self.event_hooks), register(sts, self.event_hooks)

    def dynamodb(self, session: boto3.Session) -> Any:
        """The fleet's table client (signed by the root), or None without [fleet]."""
        if self.fleet is None:
            return None
        client = session.client(
            "dynamodb",
            endpoint_url=self.fleet.endpoint,
            region_name=self.fleet.region,
            config=self.botocore_config(),
        )
        return register(client, self.event_hooks)

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
