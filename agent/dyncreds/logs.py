"""Logging: one line per event, ``event=... key=value`` fields, text or JSON.

Secrets never reach a log record: they travel as ``leases.Secret``, whose every
string form is stars, and AWS errors are mapped to one-line messages that echo
no request parameters (aws/session.py). botocore's own debug logging, which
prints request bodies and headers, is kept at WARNING even when the agent runs
at debug level.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp}Z {record.levelname.lower():7} {record.name}: {record.getMessage()}"
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
        message = record.getMessage()
        fields = _fields(message)
        if fields:
            body.update(fields)
        else:
            body["message"] = message
        if record.exc_info and record.levelno >= logging.ERROR:
            body["exc"] = repr(record.exc_info[1])[:300]
        return json.dumps(body)


_FIELD_START = re.compile(r"[a-z_]+=")
# A value runs to the next " key=" so that a trailing error=... may hold spaces.
_FIELD = re.compile(r"([a-z_]+)=(.*?)(?= [a-z_]+=|$)")


def _fields(message: str) -> dict[str, str]:
    """``event=x role=y`` -> {"event": "x", "role": "y"} (values without spaces)."""
    if not _FIELD_START.match(message):
        return {}
    return {m.group(1): m.group(2) for m in _FIELD.finditer(message)}


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("dyncreds").setLevel(root.level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
