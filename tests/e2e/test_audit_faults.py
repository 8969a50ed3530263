"""The audit trail has no holes: no line lost at SIGTERM under load, a short write
(a file-size limit) never merges two records and is counted, a refused peer is
recorded, an MFA code never appears in a recorded command line, and with
``[audit] required = true`` no credentials leave without their record."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, iam_user_role, wait_for

pytestmark = pytest.mark.e2e

NOBODY = 65534


def audit_lines(agent: AgentProcess) -> list[dict[str, Any]]:
    """Every line of the audit log, each of which must be whole JSON."""
    path = agent.state_dir / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def hammer(agent: AgentProcess, stop: threading.Event, answered: list[int]) -> None:
    """Credential requests on one connection after another until told to stop."""
    from dyncreds.client import Client, CliError

    while not stop.is_set():
        try:
            with Client(agent.socket, 10) as client:
                while not stop.is_set():
                    if client.call(op="credentials", role="ec2").get("ok"):
                        answered.append(1)
        except (CliError, OSError):
            return  # the agent went away


def test_sigterm_under_load_loses_no_line(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    assert agent.request("credentials", role="ec2")["ok"]
    stop = threading.Event()
    answered: list[int] = [1]
    threads = [threading.Thread(target=hammer, args=(agent, stop, answered)) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(answered) > 500, message="load")
    assert agent.stop(signal.SIGTERM) == 0
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    served = [e for e in audit_lines(agent) if e["op"] == "credentials" and e["outcome"] == "ok"]
    # Every answer a client got has its line (a line may exist for an answer that
    # never reached its client: the record comes first).
    assert len(served) >= len(answered), (len(served), len(answered))


def test_a_short_write_is_cut_back_to_whole_lines_and_counted(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"ec2": iam_user_role()}, 'log_level = "warning"\n')
    assert agent.request("credentials", role="ec2")["ok"]
    path = agent.state_dir / "audit.jsonl"
    wait_for(lambda: path.exists() and path.stat().st_size, message="the first line")
    assert agent.process is not None
    pid = agent.process.pid
    limit = path.stat().st_size + 700  # room for a line or two, then a partial one
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        for _ in range(40):
            assert agent.request("credentials", role="ec2")["ok"]
        # Every record is either a whole line or counted (once the last batch is out).
        dropped = wait_for(
            lambda: (
                (n := agent.request("status")["agent"]["audit_dropped"])
                and n + path.read_bytes().count(b"\n") == 41
                and n
            ),
            message="every record written whole or counted",
        )
    finally:
        unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)
    lines = audit_lines(agent)  # every line parses: none merged, none cut
    assert path.read_bytes().endswith(b"\n")
    assert len(lines) + dropped == 41 and len(lines) >= 2, (len(lines), dropped)
    assert agent.request("credentials", role="ec2")["ok"]
    wait_for(lambda: len(audit_lines(agent)) == len(lines) + 1, message="writing again")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_a_refused_peer_is_recorded_with_its_uid(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"ec2": iam_user_role()})
    for path in (agent.socket.parent, agent.socket):
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    client = (
        "import os, socket\n"
        f"os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"s.connect({str(agent.socket)!r})\n"
        # The peer is judged at its first request (a silent connection costs nothing).
        's.sendall(b\'{"op": "ping"}\\n\')\n'
        "print(s.recv(65536).decode())\n"
    )
    result = subprocess.run([sys.executable, "-c", client], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    refused = wait_for(
        lambda: [e for e in audit_lines(agent) if e["outcome"] == "forbidden"],
        message="the refusal recorded",
    )
    assert refused[0]["op"] == "connect" and refused[0]["peer"]["uid"] == NOBODY


def test_an_mfa_code_is_masked_in_recorded_command_lines(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    # With a lock to unlock (else the CLI refuses before asking the agent).
    agent = start_agent(
        {"ec2": iam_user_role()}, tables='mfa_serial = "arn:aws:iam::123456789012:mfa/vaultuser"\n'
    )
    agent.cli("unlock", "--code", "987654", check=False)
    agent.cli("unlock", "--code=987655", check=False)
    lines = wait_for(
        lambda: [e for e in audit_lines(agent) if e["op"] == "unlock"][1:] and audit_lines(agent),
        message="two unlocks recorded",
    )
    text = json.dumps(lines)
    assert "987654" not in text and "987655" not in text
    cmdlines = [e["peer"]["cmdline"] for e in lines if e["op"] == "unlock"]
    assert cmdlines[0].endswith("unlock --code ******")
    assert cmdlines[1].endswith("unlock --code=******")


def test_required_audit_refuses_credentials_it_cannot_record(
    aws: StandIn, start_agent: Callable[..., AgentProcess], short_dir: Path
) -> None:
    agent = start_agent({"ec2": iam_user_role()}, tables="[audit]\nrequired = true\n")
    assert agent.request("credentials", role="ec2")["ok"]
    path = agent.state_dir / "audit.jsonl"
    wait_for(path.exists, message="the audit log")
    subprocess.run(["chattr", "+i", str(path)], check=True)  # appends now fail
    try:
        refused = agent.request("credentials", role="ec2")
        assert refused["error"]["code"] == "unavailable", refused
        assert "[audit] required" in refused["error"]["message"]
        assert "SecretAccessKey" not in json.dumps(refused)
        shim = agent.cli("credentials", "ec2", check=False)
        assert shim.returncode != 0
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert agent.request("credentials", role="ec2")["ok"]
    served = [e for e in audit_lines(agent) if e["op"] == "credentials" and e["outcome"] == "ok"]
    assert len(served) == 2  # the two that were handed out, each recorded


def round_written(agent: AgentProcess, rotated: Path, lines: int) -> bool:
    return rotated.exists() or len(audit_lines(agent)) >= lines


def test_the_log_is_capped_with_one_rotated_file_and_can_be_off(
    aws: StandIn, start_agent: Callable[..., AgentProcess], short_dir: Path
) -> None:
    agent = start_agent({"ec2": iam_user_role()}, tables="[audit]\nmax_size = 4096\n")
    path = agent.state_dir / "audit.jsonl"
    rotated = path.with_name("audit.jsonl.1")
    for _ in range(10):  # rounds of lines, each written before the next: past max_size
        if rotated.exists():
            break
        written = len(audit_lines(agent))
        for _ in range(15):
            assert agent.request("credentials", role="ec2")["ok"]
        wait_for(partial(round_written, agent, rotated, written + 15), message="the round")
    assert rotated.exists()
    assert not path.with_name("audit.jsonl.2").exists()
    read = json.loads(agent.cli("audit", "--json").stdout)
    assert len(read) == len(audit_lines(agent)) + len(rotated.read_text().splitlines())
    agent.stop()
    (short_dir / "off").mkdir(mode=0o700)
    off = AgentProcess(short_dir / "off", aws, {"ec2": iam_user_role()}, "", '[audit]\nfile = ""\n')
    off.start()
    try:
        assert off.request("credentials", role="ec2")["ok"]
        assert not (off.state_dir / "audit.jsonl").exists()
    finally:
        off.stop()


def test_renew_rotate_and_rotate_root_are_recorded(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    from tests.e2e.test_static_user import ROLE, make_user

    make_user(aws)
    agent = start_agent({"ec2": iam_user_role(), "legacy": ROLE})
    assert agent.request("credentials", role="ec2")["ok"]
    renewed = agent.request("renew", role="ec2")
    rotated = agent.request("rotate", role="legacy")
    root = agent.request("rotate_root")
    assert renewed["ok"] and rotated["ok"] and root["ok"], (renewed, rotated, root)

    def recorded() -> dict[str, dict[str, Any]]:
        return {e["op"]: e for e in audit_lines(agent) if e["op"] != "credentials"}

    ops = wait_for(lambda: len(recorded()) == 3 and recorded(), message="three records")
    assert ops["renew"]["lease_id"] == renewed["lease"]["id"]
    assert ops["rotate"]["lease_id"] == rotated["lease"]["id"]
    assert all(e["outcome"] == "ok" and e["peer"]["pid"] for e in ops.values())
    assert ops["rotate_root"]["role"] is None
