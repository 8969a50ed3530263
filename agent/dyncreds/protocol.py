"""The socket protocol: requests, responses, error codes, codec. Pure.

One JSON object per line each way. Requests are a msgspec tagged union on the
``op`` field, decoded by one typed decoder; every failure the agent can report
is a ``DyncredsError`` subclass that carries its wire ``code`` (as h11's errors
carry their HTTP status), so mapping an exception to a response happens here
and nowhere else.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

# Stamps on the wire are RFC 3339; the one home of that format is timefmt.py.
from dyncreds.timefmt import parse_rfc3339 as parse_rfc3339
from dyncreds.timefmt import rfc3339 as rfc3339

MAX_LINE = 64 * 1024


# --------------------------------------------------------------------------- errors


class DyncredsError(Exception):
    """An error with a wire code. The message is one line and never holds a secret."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class BadRequest(DyncredsError):
    code = "bad_request"


class UnknownOp(DyncredsError):
    code = "unknown_op"


class UnknownRole(DyncredsError):
    code = "unknown_role"


class TooLarge(DyncredsError):
    code = "too_large"


class Forbidden(DyncredsError):
    code = "forbidden"


class Upstream(DyncredsError):
    """AWS said no (or could not be reached). ``aws_code`` is AWS's error code."""

    code = "upstream"

    def __init__(
        self, message: str, aws_code: str = "Unknown", retryable: bool = False, sent: int = -1
    ):
        super().__init__(message)
        self.aws_code = aws_code
        self.retryable = retryable
        # HTTP attempts that left the agent (-1: unknown). 0, or 1 refused outright,
        # proves that a create call created nothing.
        self.sent = sent

    @property
    def created_nothing(self) -> bool:
        return self.sent == 0 or (self.sent == 1 and not self.retryable)


class Unavailable(DyncredsError):
    code = "unavailable"


class Internal(DyncredsError):
    code = "internal"


class Locked(DyncredsError):
    """The root needs an MFA unlock (or was locked on purpose) before this."""

    code = "locked"


# --------------------------------------------------------------------------- requests


class Request(msgspec.Struct, tag_field="op", forbid_unknown_fields=True):
    pass


class Ping(Request, tag="ping"):
    pass


class GetCredentials(Request, tag="credentials"):
    role: str


class CredentialProcess(Request, tag="credential_process"):
    role: str


class Status(Request, tag="status"):
    pass


class Roles(Request, tag="roles"):
    pass


class Revoke(Request, tag="revoke"):
    lease_id: str | None = None
    role: str | None = None
    all: bool = False
    # Forget a lease the agent cannot revoke in AWS (it stays in AWS: the operator
    # has taken responsibility for it).
    force: bool = False


class Renew(Request, tag="renew"):
    role: str


class Reload(Request, tag="reload"):
    pass


class RotateRoot(Request, tag="rotate_root"):
    pass


class Rotate(Request, tag="rotate"):
    role: str


class Unlock(Request, tag="unlock"):
    code: str


class Lock(Request, tag="lock"):
    pass


class FleetStatus(Request, tag="fleet_status"):
    pass


class Watch(Request, tag="watch"):
    """An endpoint's long poll: answered with the agent's generation as soon as it
    differs from ``seen`` (a lock, unlock, revoke or renewal), else after
    WATCH_HOLD. The next watch acknowledges the answer (see agentlink.py)."""

    id: Annotated[str, msgspec.Meta(max_length=64)]
    seen: int = -1


WATCH_HOLD = 20.0


class EndpointEvent(msgspec.Struct, forbid_unknown_fields=True):
    """Hand-outs (``outcome`` "ok") or refusals (the error code) of an endpoint,
    ``count`` of them between ``first`` and ``last``, for one client connection."""

    outcome: Annotated[str, msgspec.Meta(max_length=64)]
    role: Annotated[str, msgspec.Meta(max_length=256)]
    count: Annotated[int, msgspec.Meta(ge=1)]
    first: Annotated[str, msgspec.Meta(max_length=32)]
    last: Annotated[str, msgspec.Meta(max_length=32)]
    mode: Annotated[str, msgspec.Meta(max_length=8)] = "ecs"
    client: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    client_uid: int | None = None
    access_key_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    lease_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class Report(Request, tag="report"):
    """An endpoint's events for the audit log."""

    events: Annotated[list[EndpointEvent], msgspec.Meta(max_length=1000)]


AnyRequest = (
    Ping
    | GetCredentials
    | CredentialProcess
    | Status
    | Roles
    | Revoke
    | Renew
    | Reload
    | RotateRoot
    | Rotate
    | Unlock
    | Lock
    | FleetStatus
    | Watch
    | Report
)
OPS = frozenset(
    str(cls.__struct_config__.tag)
    for cls in (
        Ping,
        GetCredentials,
        CredentialProcess,
        Status,
        Roles,
        Revoke,
        Renew,
        Reload,
        RotateRoot,
        Rotate,
        Unlock,
        Lock,
        FleetStatus,
        Watch,
        Report,
    )
)

_request_decoder = msgspec.json.Decoder(AnyRequest)
_encoder = msgspec.json.Encoder()


def decode_request(line: bytes) -> AnyRequest:
    """One request line -> a typed request, or BadRequest / UnknownOp."""
    try:
        request: AnyRequest = _request_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise _explain_decode_failure(line, exc) from None
    if isinstance(request, Revoke):
        chosen = sum((request.lease_id is not None, request.role is not None, request.all))
        if chosen != 1:
            raise BadRequest("revoke takes exactly one of lease_id, role or all")
    return request


def _explain_decode_failure(line: bytes, exc: msgspec.DecodeError) -> DyncredsError:
    try:
        raw = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return BadRequest("request is not valid JSON")
    if not isinstance(raw, dict):
        return BadRequest('request must be a JSON object like {"op": "ping"}')
    op = raw.get("op")
    if not isinstance(op, str):
        return BadRequest('request needs a string "op" field')
    if op not in OPS:
        return UnknownOp(f"unknown op {op[:64]!r}")
    return BadRequest(f"bad {op} request: {exc}")


# --------------------------------------------------------------------------- responses


def ok(body: dict[str, Any] | None = None) -> bytes:
    return _encoder.encode({"ok": True, **(body or {})}) + b"\n"


def error(exc: DyncredsError) -> bytes:
    return (
        _encoder.encode({"ok": False, "error": {"code": exc.code, "message": exc.message}}) + b"\n"
    )
