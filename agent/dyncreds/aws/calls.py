"""Threaded calls: one AWS operation on a boto3 client, in a worker thread.

boto3 is blocking, so every call runs in a worker thread under one shared
``CapacityLimiter`` (``aws_concurrency``). Its time is bounded twice: botocore's
connect/read timeouts for each HTTP attempt (clients.py), and a trio deadline
for the call with all its retries, so a client never hangs on a sick AWS. A
call its caller gave up on sends no further attempt (attempts.py); exceptions
become dyncreds errors in one place, ``errors.map_errors``. Which client signs
a call is the session's business (session.py), not this module's.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from dyncreds import logs
from dyncreds.aws.attempts import Attempts, local
from dyncreds.aws.errors import map_errors
from dyncreds.protocol import Upstream

log = logs.get("aws")

# Creates that are not idempotent: an attempt whose answer was lost may have
# created something, so botocore must not send another (a second key nobody
# would journal); the caller reconciles instead (list, delete what is unknown).
SEND_ONCE = frozenset({"create_access_key"})


class Caller:
    """Runs calls in worker threads: at most ``concurrency`` at once, each within
    ``call_timeout`` per attempt and ``call_timeout`` x attempts in all."""

    def __init__(self, *, call_timeout: float, concurrency: int, max_retries: int):
        self.call_timeout = call_timeout
        self.limiter = trio.CapacityLimiter(concurrency)
        self.max_retries = max_retries

    async def call(self, client: Any, operation: str, /, **params: Any) -> dict[str, Any]:
        """Run ``operation`` (snake_case) on ``client`` in a worker thread, bounded."""
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
            with map_errors(camel(operation)):
                with trio.fail_after(self.call_timeout * (self.max_retries + 1)):
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
                op=camel(operation),
                outcome=outcome,
                seconds=round(time.monotonic() - started, 3),
            )
        return result


def camel(operation: str) -> str:
    return "".join(part.title() for part in operation.split("_"))
