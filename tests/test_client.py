"""The one client (dyncreds.client) and the shim's stdlib copy of the wire agree:
the start hint, the exit codes, and the request line the agent decodes."""

from __future__ import annotations

from pathlib import Path

import dyncreds_shim
from dyncreds import client, protocol
from dyncreds.aws.credtypes import ops
from dyncreds.kinds import KINDS


def test_shim_and_client_share_the_hint_and_exit_codes() -> None:
    assert dyncreds_shim.START_HINT == client.START_HINT
    assert dyncreds_shim.EXIT_AGENT_ERROR == client.EXIT_AGENT_ERROR
    assert dyncreds_shim.EXIT_USAGE == client.EXIT_USAGE
    assert dyncreds_shim.EXIT_NOT_RUNNING == client.EXIT_NOT_RUNNING


def test_shim_request_line_is_a_valid_request() -> None:
    line = dyncreds_shim.request_line("ec2-full")
    request = protocol.decode_request(line.rstrip(b"\n"))
    assert isinstance(request, protocol.CredentialProcess) and request.role == "ec2-full"


def test_not_running_is_exit_3_with_the_hint(tmp_path: Path) -> None:
    _out, message, status = dyncreds_shim.fetch("r", str(tmp_path / "none.sock"), 1.0)
    assert status == client.EXIT_NOT_RUNNING and client.START_HINT in message
    try:
        client.request(tmp_path / "none.sock", "ping")
    except client.CliError as exc:
        assert exc.status == client.EXIT_NOT_RUNNING and client.START_HINT in str(exc)
    else:
        raise AssertionError("no error for a missing socket")


def test_every_kind_has_an_issuer() -> None:
    """Every registered type's module has its operations, and the row says which."""
    for kind in KINDS.values():
        found = ops(kind)
        assert found.issue is not None
        assert (found.extend is not None) == kind.extendable, kind.name
        assert (found.revoke is not None) == (kind.journal_thing is not None), kind.name
        assert (found.revoke_sessions is not None) == (kind.sessions_scope is not None)
        assert ("revoke_sessions" in kind.fields) == (kind.sessions_scope is not None)
