"""What botocore does for one call, seen from its events: attempts counted, and
the attempts that must not be sent (an abandoned call's; a SEND_ONCE create's
after an attempt whose answer was lost). See ``AwsSession.call_client``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

BotoHook = Callable[..., Any]


@dataclass
class Attempts:
    """What botocore did for one call, seen from its ``before-send`` event."""

    sent: int = 0
    abandoned: bool = False
    once: bool = False  # SEND_ONCE: no attempt after one whose answer was lost
    answered: bool = True  # the last attempt got an HTTP answer (an error is one)


class AnswerLost(botocore.exceptions.BotoCoreError):
    """Raised instead of resending a SEND_ONCE call whose last answer was lost."""

    fmt = "the previous attempt's answer was lost; not resent"


class CallAbandoned(botocore.exceptions.BotoCoreError):
    """Raised in a worker thread instead of sending an attempt nobody waits for.
    Not a retryable error, so botocore's retry loop ends with it."""

    fmt = "dyncreds abandoned this call: its caller gave up"


local = threading.local()


def _before_send(**_: Any) -> None:
    """Counts attempts, and stops those of an abandoned call (see call_client)."""
    attempts: Attempts | None = getattr(local, "attempts", None)
    if attempts is not None:
        if attempts.abandoned:
            raise CallAbandoned()
        if attempts.once and attempts.sent and not attempts.answered:
            raise AnswerLost()
        attempts.sent += 1
        attempts.answered = False


def _response_received(response_dict: Any = None, **_: Any) -> None:
    attempts: Attempts | None = getattr(local, "attempts", None)
    if attempts is not None and response_dict is not None:
        attempts.answered = True


def register(client: Any, hooks: list[tuple[str, BotoHook]]) -> Any:
    # Ours first: an attempt is counted (or stopped) before any test hook answers it.
    client.meta.events.register("before-send", _before_send)
    client.meta.events.register("response-received", _response_received)
    for event, hook in hooks:
        client.meta.events.register(event, hook)
    return client
