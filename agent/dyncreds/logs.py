"""Logging: one line per event, named from one vocabulary, text or JSON.

Code says what happened and with which fields::

    log = logs.get("agent")
    log.info("lease.extended", role=name, lease=lease_id, expires=...)

and the formatter writes ``event=lease.extended role=... lease=...`` (text) or
``{"event": "lease.extended", "role": ..., ...}`` (JSON) from the same fields;
nothing is formatted into a string and parsed back. Event names are
``area.what``: ``agent.*``, ``lease.*`` (issued, extended, replaced, retired,
revoked ...), ``root.*``, ``config.*``, ``orphan.*``, ``request.*``, ``aws.*``.
*Extend* means same keys with a later expiry, *replace* means new keys.

Secrets never reach a log record: they travel as ``leases.Secret``, whose every
string form is stars, and AWS errors are mapped to one-line messages that echo
no request parameters (aws/errors.py). botocore's own debug logging, which
prints request bodies and headers, is kept at WARNING even when the agent runs
at debug level.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

_FIELDS = "dyncreds_fields"


class EventLogger:
    """A ``logging.Logger`` that takes an event name and fields."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger

    def _log(self, level: int, event: str, fields: dict[str, Any], exc: bool = False) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "%s", event, extra={_FIELDS: fields}, exc_info=exc)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the exception's type and message (never its traceback's locals)."""
        self._log(logging.ERROR, event, fields, exc=True)


def get(area: str) -> EventLogger:
    return EventLogger(logging.getLogger(f"dyncreds.{area}"))


def said(exc: BaseException) -> str:
    """An unexpected exception as one short line, for a loop that must go on:
    a dyncreds error's own message, else its type and message."""
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        return message
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


THROTTLE_INTERVAL = 10.0


class Throttle:
    """Warnings that can come in floods (bad requests, refused peers, accept
    failures): each kind (the event and ``kind``) is logged at most once per
    ``interval``; the ones in between are counted, and the next line of that kind
    carries ``repeated=N``. Nothing is lost but the repetition."""

    def __init__(
        self,
        log: EventLogger,
        interval: float = THROTTLE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.log = log
        self.interval = interval
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}

    def warning(self, event: str, kind: str = "", **fields: Any) -> None:
        key = f"{event}:{kind}"
        now = self.clock()
        last, count = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._seen[key] = (last, count + 1)
            return
        if len(self._seen) >= 1024:  # kinds come from a fixed vocabulary; bound anyway
            self._seen.clear()
        self._seen[key] = (now, 0)
        if count:
            fields["repeated"] = count
        self.log.warning(event, **fields)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(record, _FIELDS, None) or {}
    return fields


def _text_value(value: Any) -> str:
    if isinstance(value, float):
        value = round(value, 3)
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = _fields(record)
        message = record.getMessage()
        if fields or hasattr(record, _FIELDS):
            message = " ".join(
                [f"event={message}"] + [f"{k}={_text_value(v)}" for k, v in fields.items()]
            )
        line = f"{stamp}Z {record.levelname.lower():7} {record.name}: {message}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += " exc=" + repr(record.exc_info[1])[:300]
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if hasattr(record, _FIELDS):
            body["event"] = record.getMessage()
            body.update(_fields(record))
        else:
            body["message"] = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            body["exc"] = repr(record.exc_info[1])[:300]
        return json.dumps(body, default=str)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("dyncreds").setLevel(root.level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
