"""The wire protocol: decoding, error codes, encoding."""

from __future__ import annotations

import json

import pytest

from dyncreds import protocol
from dyncreds.protocol import BadRequest, UnknownOp


def test_decodes_each_op() -> None:
    assert isinstance(protocol.decode_request(b'{"op":"ping"}'), protocol.Ping)
    request = protocol.decode_request(b'{"op":"credentials","role":"x"}')
    assert isinstance(request, protocol.GetCredentials) and request.role == "x"
    revoke = protocol.decode_request(b'{"op":"revoke","all":true}')
    assert isinstance(revoke, protocol.Revoke) and revoke.all


@pytest.mark.parametrize(
    ("line", "error", "text"),
    [
        (b"not json", BadRequest, "not valid JSON"),
        (b"[1,2]", BadRequest, "JSON object"),
        (b'{"role":"x"}', BadRequest, '"op"'),
        (b'{"op":"fly"}', UnknownOp, "unknown op"),
        (b'{"op":"credentials"}', BadRequest, "role"),
        (b'{"op":"credentials","role":5}', BadRequest, "Expected `str`"),
        (b'{"op":"ping","extra":1}', BadRequest, "extra"),
        (b'{"op":"revoke"}', BadRequest, "exactly one"),
        (b'{"op":"revoke","role":"a","all":true}', BadRequest, "exactly one"),
    ],
)
def test_bad_requests(line: bytes, error: type, text: str) -> None:
    with pytest.raises(error) as caught:
        protocol.decode_request(line)
    assert text in str(caught.value)
    assert "\n" not in str(caught.value)


def test_error_envelope() -> None:
    body = json.loads(protocol.error(UnknownOp("unknown op 'x'\nsecond line")))
    assert body == {
        "ok": False,
        "error": {"code": "unknown_op", "message": "unknown op 'x' second line"},
    }


def test_rfc3339_is_utc_with_z() -> None:
    assert protocol.rfc3339(0) == "1970-01-01T00:00:00Z"
    assert protocol.parse_rfc3339("1970-01-01T00:01:00Z") == 60
