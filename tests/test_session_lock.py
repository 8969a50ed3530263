"""The real AWS session's lock decision follows the keeper's injected clock: on
trio's mock clock, an MFA session that ends on mock time locks the root's calls
without a second of wall time passing. AWS is answered at the edge, by a
botocore ``before-send`` hook (no network, no moto)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from dyncreds import config
from dyncreds.aws.backend import AwsBackend
from dyncreds.journal.sqlite import SqliteJournal
from dyncreds.keeper import LateRootGate, RootKeeper
from dyncreds.protocol import Locked, rfc3339
from dyncreds.rootlock import MARGIN
from tests.fakes import WallClock

UNLOCK_FOR = 900.0
STS = '<{op}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><{op}Result>{body}'
STS_END = (
    "</{op}Result><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></{op}Response>"
)


class Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data


class StsAnswers:
    """GetSessionToken and GetCallerIdentity, answered without a network (in the
    call's worker thread): the MFA session AWS issues ends at ``ends``."""

    def __init__(self) -> None:
        self.ends = 0.0
        self.asked: list[str] = []

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        op = "GetSessionToken" if "Action=GetSessionToken" in body else "GetCallerIdentity"
        self.asked.append(op)
        if op == "GetSessionToken":
            inner = (
                "<Credentials><AccessKeyId>ASIAMFASESSION</AccessKeyId>"
                "<SecretAccessKey>mfa-secret</SecretAccessKey><SessionToken>mfa-token</SessionToken>"
                f"<Expiration>{rfc3339(self.ends)}</Expiration></Credentials>"
            )
        else:
            inner = (
                "<Arn>arn:aws:iam::123456789012:user/root</Arn><UserId>AIDAROOT</UserId>"
                "<Account>123456789012</Account>"
            )
        xml = (STS.format(op=op, body=inner) + STS_END.format(op=op)).encode()
        headers = HTTPHeaders()
        headers["Content-Type"] = "text/xml"
        return AWSResponse(request.url, 200, headers, Body(xml))


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock()  # no autojump: the calls run in worker threads


async def test_an_mfa_session_ending_on_the_agents_clock_locks_the_real_session(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    key = tmp_path / "root.toml"
    key.write_text('access_key_id = "AKIAROOT"\nsecret_access_key = "root-secret"\n')
    os.chmod(key, 0o600)
    (tmp_path / "config.toml").write_text(
        '[root]\ncredentials_file = "root.toml"\nregion = "us-east-1"\n'
        'mfa_serial = "arn:aws:iam::123456789012:mfa/admin"\nunlock_for = "15m"\n'
        'sts_endpoint = "http://127.0.0.1:9"\niam_endpoint = "http://127.0.0.1:9"\n'
    )
    cfg = config.load(tmp_path)
    wall = WallClock()  # 2027: far from the machine's own clock
    answers = StsAnswers()
    root_gate = LateRootGate()
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    backend = AwsBackend(
        cfg, journal, "agent-a", event_hooks=[("before-send.sts", answers)], root_gate=root_gate
    )
    keeper = RootKeeper(
        backend, cfg.main.root, wall=wall, rng=lambda: 0.5, counters=Counter(), root_gate=root_gate
    )
    with pytest.raises(Locked, match="dyncreds unlock"):
        await backend.identity()  # locked until the unlock: nothing sent
    assert answers.asked == []
    started = time.monotonic()
    answers.ends = wall() + UNLOCK_FOR  # AWS's session: 15 minutes on the agent's clock
    assert await keeper.unlock("123456") == answers.ends
    assert await backend.identity() == "arn:aws:iam::123456789012:user/root"
    # The session ends on the agent's clock (minus the margin a call needs), not
    # on the machine's: no wall time passes here.
    mock_clock.jump(UNLOCK_FOR - MARGIN - 1)
    assert await backend.identity() == "arn:aws:iam::123456789012:user/root"
    asked = len(answers.asked)
    mock_clock.jump(2)
    with pytest.raises(Locked, match="MFA session ended"):
        await backend.identity()
    with pytest.raises(Locked, match="MFA session ended"):
        backend.aws.require_unlocked()  # the issuers' check: the same answer
    assert len(answers.asked) == asked  # refused before anything was sent
    assert keeper.view("file", None)["locked"] is True
    assert time.monotonic() - started < 30  # mock time did it, not a real wait
    journal.close_now()
