"""The credential endpoints under attack from the same host: another Unix user
(made here with useradd, run with setpriv), connection floods under a 1,024
descriptor limit, Ctrl-C at a pseudo-terminal, a static ``[default]`` profile in
the user's shared files, reused token files, IMDS header tricks, log floods, and
the lock fence as seen through ``serve``."""

from __future__ import annotations

import functools
import http.client
import os
import pty
import pwd
import resource
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dyncreds import audit
from dyncreds.aws.standin import StandIn
from tests.conftest import AgentProcess, iam_user_role, raw_request, wait_for
from tests.e2e import test_endpoint
from tests.e2e.conftest import Rig
from tests.e2e.test_clients import available, need
from tests.e2e.test_endpoint import Served, client_command, exec_

# The endpoint tests' fixtures, shared.
endpoint_agent = test_endpoint.endpoint_agent
served = test_endpoint.served
go_default_chain = test_endpoint.go_default_chain

pytestmark = pytest.mark.e2e

ROOT = os.geteuid() == 0


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def stranger() -> Iterator[tuple[int, int]]:
    """Another Unix user, made for this test (CI runs as root)."""
    need(ROOT and os.path.exists("/usr/sbin/useradd"), "creating a Unix user needs root")
    name = f"dcx{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def curl_as(who: tuple[int, int], *args: str) -> tuple[int, str]:
    """curl run by another user: (HTTP status, body); status 0 when refused at TCP."""
    uid, gid = who
    result = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         "curl", "-s", "-m", "5", "-w", "\\n%{http_code}", *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    body, _, status = result.stdout.rpartition("\n")
    return int(status or 0), body


def audit_lines(agent: AgentProcess, **match: object) -> list[dict[str, Any]]:
    entries = audit.read(agent.state_dir / "audit.jsonl")
    return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


def more_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


# --------------------------------------------------------------------------- 1. peers


def test_another_user_gets_nothing_from_ecs_or_imds(
    endpoint_agent: AgentProcess, served: Callable[..., Served], stranger: tuple[int, int]
) -> None:
    ecs = served()
    token = ecs.lines["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    url = f"http://127.0.0.1:{ecs.port}{ecs.path}"
    assert ecs.get(Authorization=token)[0] == 200  # the owner is served
    # Even holding the token, another user is refused, before any answer.
    status, body = curl_as(stranger, "-H", f"Authorization: {token}", url)
    assert status == 403 and "AccessKeyId" not in body and "serves uid" in body

    imds = served("--imds")
    base = imds.lines["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
    assert not base.endswith("/")
    status, body = curl_as(
        stranger, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60",
        f"{base}/latest/api/token",
    )  # fmt: skip
    assert status == 403 and "AccessKeyId" not in body
    # The owner's curl, on the printed endpoint as is ($E/latest/api/token).
    mine = subprocess.run(
        ["curl", "-s", "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60",
         f"{base}/latest/api/token"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert len(mine.stdout) >= 32
    # Each refusal is in the audit log with the peer's uid, reported by the endpoint.
    uid = stranger[0]

    def refusals() -> list[dict[str, object]]:
        found = audit_lines(endpoint_agent, op="endpoint", outcome="forbidden")
        return [e for e in found if e["client"] == {"address": e["client"]["address"], "uid": uid}]

    refused = wait_for(lambda: len(refusals()) >= 2 and refusals(), message="both refusals audited")
    assert {e["mode"] for e in refused} == {"ecs", "imds"}
    for s in (ecs, imds):
        err = s.stop()
        assert token not in err and "Traceback" not in err


def test_another_user_gets_nothing_from_exec(
    endpoint_agent: AgentProcess, stranger: tuple[int, int], short_dir: Path
) -> None:
    seen = short_dir / "seen"
    process = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "exec", "ec2", "--", "sh", "-c",
         f'echo "$AWS_CONTAINER_CREDENTIALS_FULL_URI $AWS_CONTAINER_AUTHORIZATION_TOKEN" '
         f"> {seen}.tmp && mv {seen}.tmp {seen}; sleep 60"],
        env=endpoint_agent.env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url, token = wait_for(lambda: seen.exists() and seen.read_text().split())
        status, body = curl_as(stranger, "-H", f"Authorization: {token}", url)
        assert status == 403 and "AccessKeyId" not in body
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def test_imds_refuses_to_listen_beyond_loopback(
    endpoint_agent: AgentProcess,
) -> None:
    for listen in ("0.0.0.0:0", "[::]:0"):
        result = endpoint_agent.cli("serve", "ec2", "--imds", "--listen", listen, check=False)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "loopback only" in result.stderr
        assert result.stdout == ""


def test_non_loopback_ecs_says_the_token_guards_it(
    endpoint_agent: AgentProcess, served: Callable[..., Served]
) -> None:
    s = served("--listen", "0.0.0.0:0")
    err = s.stop()
    assert "the token is all that guards" in err and "kernel cannot tell" in err


def test_imds_refuses_a_role_whose_ttl_is_too_short(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent({"short": iam_user_role(extra='ttl = "15m"\n')})
    result = agent.cli("serve", "short", "--imds", check=False)
    assert result.returncode == 2
    assert "role short" in result.stderr and "21 minutes" in result.stderr


# --------------------------------------------------------------------------- 2. floods


def test_a_connection_flood_does_not_lock_the_endpoint_out(
    endpoint_agent: AgentProcess, served: Callable[..., Served]
) -> None:
    more_descriptors()
    s = served(prefix=("prlimit", "--nofile=1024"))
    token = s.lines["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    held = []
    try:
        for _ in range(2000):
            held.append(socket.create_connection((s.host, s.port), timeout=10))
        started = time.monotonic()
        assert s.get(Authorization=token)[0] == 200
        assert time.monotonic() - started < 1.0
    finally:
        for sock in held:
            sock.close()
    err = s.stop()
    assert "Traceback" not in err and err.count("\n") <= 5, err[-2000:]


def _connected(sock: socket.socket, path: str) -> bool:
    return sock.connect_ex(path) == 0


def test_a_connection_flood_does_not_lock_the_agent_socket_out(
    endpoint_agent: AgentProcess,
) -> None:
    more_descriptors()
    assert endpoint_agent.process is not None
    resource.prlimit(endpoint_agent.process.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    held = []
    try:
        for _ in range(2000):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.append(sock)
            # (A full backlog answers EAGAIN at once: try again as the agent accepts.)
            path = str(endpoint_agent.socket)
            wait_for(functools.partial(_connected, sock, path), timeout=10)
        started = time.monotonic()
        assert raw_request(endpoint_agent.socket, {"op": "ping"}, timeout=10)["ok"]
        assert time.monotonic() - started < 1.0
    finally:
        for sock in held:
            sock.close()
    assert "Traceback" not in endpoint_agent.log()


def _soft_nofile(pid: int) -> int:
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]


def test_the_descriptor_limit_is_raised_to_the_hard_one(
    aws: StandIn, start_agent: Callable[..., AgentProcess]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need(hard > 512, "the hard descriptor limit is too low to tell")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # what the children inherit
    try:
        agent = start_agent({"ec2": iam_user_role()})
        s = Served(agent)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert agent.process is not None
        assert _soft_nofile(agent.process.pid) == hard
        assert _soft_nofile(s.process.pid) == hard
    finally:
        s.stop()


def test_bad_requests_do_not_flood_the_log(
    endpoint_agent: AgentProcess, served: Callable[..., Served]
) -> None:
    s = served()
    conn = http.client.HTTPConnection(s.host, s.port, timeout=10)
    for _ in range(300):
        conn.request("GET", s.path, headers={"Authorization": "wrong"})
        response = conn.getresponse()
        response.read()
        assert response.status == 403
    conn.close()
    err = s.stop()
    lines = [line for line in err.splitlines() if "endpoint.request" in line]
    assert 1 <= len(lines) <= 3, err  # logged once per interval, counted


# --------------------------------------------------------------------------- 3. signals

CHILD = """
import json, os, signal, sys, time, urllib.request
got = []
signal.signal(signal.SIGINT, lambda *_: got.append(1))
print("ready", flush=True)
while not got:
    time.sleep(0.02)
time.sleep(0.5)  # a second SIGINT, forwarded by exec, would have come by now
for _ in range(3):  # a graceful shutdown that still needs credentials
    request = urllib.request.Request(
        os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"],
        headers={"Authorization": os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]})
    json.load(urllib.request.urlopen(request, timeout=5))["AccessKeyId"]
    time.sleep(0.1)
print("served, interrupts:", len(got), flush=True)
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.kill(os.getpid(), signal.SIGINT)
"""


def _read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's other side is gone
            break
        if not chunk:
            break
        out += chunk
    return out


def test_ctrl_c_at_a_terminal(endpoint_agent: AgentProcess) -> None:
    argv = [sys.executable, "-m", "dyncreds", "exec", "ec2", "--", sys.executable, "-c", CHILD]
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec under a terminal of its own
        os.execve(sys.executable, argv, endpoint_agent.env)
    try:
        assert b"ready" in _read_until(fd, b"ready")
        os.write(fd, b"\x03")  # Ctrl-C: SIGINT to the terminal's foreground group
        out = _read_until(fd, b"never", timeout=30)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 130, text
    assert "served, interrupts: 1" in text  # served until it exited; ^C once
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


def test_a_signal_to_exec_alone_is_forwarded_and_the_child_never_outlives_it(
    endpoint_agent: AgentProcess,
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "exec", "ec2", "--", sys.executable, "-c", CHILD],
        env=endpoint_agent.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)  # `kill -INT` to exec, not to its group
    assert process.wait(timeout=30) == 130
    assert "served, interrupts: 1" in process.stdout.read()

    # exec killed outright: its child gets SIGTERM instead of living on unknowingly.
    killed = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "exec", "ec2", "--", "sleep", "60"],
        env=endpoint_agent.env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    child = wait_for(
        lambda: subprocess.run(
            ["pgrep", "-P", str(killed.pid), "sleep"], capture_output=True, text=True
        ).stdout.strip(),
        message="the child started",
    )
    killed.kill()
    killed.wait()

    def gone() -> bool:
        try:
            return Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
        except OSError:
            return True

    wait_for(gone, timeout=10, message="the orphaned child ended")


# --------------------------------------------------------------------------- 4. [default]


@pytest.mark.parametrize("name", ["boto3", "awscli-v2", "js-sdk-v3", "go-sdk-v2"])
def test_a_static_default_profile_does_not_capture_the_child(
    name: str, aws: StandIn, endpoint_agent: AgentProcess, go_default_chain: Path | None
) -> None:
    ok, reason = available(name, go_default_chain)
    need(ok, reason)
    decoy = "[default]\naws_access_key_id = AKIADECOYDECOYDECOY0\naws_secret_access_key = x\n"
    Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).write_text(decoy)
    Path(os.environ["AWS_CONFIG_FILE"]).write_text(
        decoy + "region = us-east-1\nmax_attempts = 7\n"
        "credential_process = /bin/false\n  continued = x\n"
        "[profile other]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = default\n"
    )
    result = exec_(
        endpoint_agent, "ec2", "--", *client_command(name, aws.endpoint, go_default_chain),
        env={"AWS_ACCESS_KEY": "AKIADECOY", "AWS_SECRET_KEY": "x", "AWS_DEFAULT_PROFILE": "other"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ":user/" in result.stdout and "DECOY" not in result.stdout


def test_the_lines_serve_prints_make_the_role_win_in_a_shell(
    aws: StandIn, endpoint_agent: AgentProcess, served: Callable[..., Served]
) -> None:
    decoy = "[default]\naws_access_key_id = AKIADECOYDECOYDECOY0\naws_secret_access_key = x\n"
    Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).write_text(decoy)
    Path(os.environ["AWS_CONFIG_FILE"]).write_text(decoy + "region = us-east-1\n")
    s = served()
    assert s.process.stdout is not None
    rest = [s.process.stdout.readline() for _ in range(3)]
    assert rest[-1].startswith("unset ") and "AWS_ACCESS_KEY_ID" in rest[-1]
    lines = [f"export {k}={v}" for k, v in s.lines.items()] + rest
    program = "import boto3, os; print(boto3.client('sts', endpoint_url=os.environ['EP'])" + (
        ".get_caller_identity()['Arn'])"
    )
    script = "export AWS_ACCESS_KEY_ID=AKIADECOY AWS_SECRET_ACCESS_KEY=x AWS_PROFILE=x\n"
    script += "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    result = subprocess.run(
        ["sh", "-c", script + f'exec {sys.executable} -c "{program}"'],
        env=dict(os.environ, EP=aws.endpoint), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ":user/" in result.stdout
    s.stop()


def test_the_users_other_settings_still_apply(endpoint_agent: AgentProcess) -> None:
    Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).write_text(
        "[default]\naws_access_key_id = AKIADECOY\naws_secret_access_key = x\n"
    )
    Path(os.environ["AWS_CONFIG_FILE"]).write_text(
        "[default]\naws_access_key_id = AKIADECOY\nmax_attempts = 7\n"
        "s3 =\n  addressing_style = path\n"
    )
    program = (
        "import botocore.session as b; s = b.get_session(); c = s.get_scoped_config();"
        "print(s.get_config_variable('max_attempts'), c['s3']['addressing_style'],"
        " 'aws_access_key_id' in c, s.get_credentials().method)"
    )
    result = exec_(endpoint_agent, "ec2", "--", sys.executable, "-c", program)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "path", "False", "container-role"]


# --------------------------------------------------------------------------- 5. token files


def test_token_files_are_replaced_and_removed(
    endpoint_agent: AgentProcess, served: Callable[..., Served], short_dir: Path
) -> None:
    (short_dir / "token").write_text("someone else's")
    wanted = short_dir / "endpoint-token"
    for _ in range(2):  # the second run replaces what a killed first run left
        s = served("--token-file", str(wanted))
        token = wanted.read_text()
        assert s.lines["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == str(wanted)
        assert oct(wanted.stat().st_mode & 0o777) == "0o600" and not token.endswith("\n")
        assert s.get(Authorization=token)[0] == 200
        s.process.kill()
        s.process.wait()
    s = served("--token-file", str(wanted))
    assert "Traceback" not in s.stop()
    assert not wanted.exists()
    assert (short_dir / "token").read_text() == "someone else's"
    assert [p.name for p in short_dir.iterdir() if p.name.endswith(".tmp")] == []


# --------------------------------------------------------------------------- 6. IMDS


def _raw(s: Served, request: bytes) -> int:
    with socket.create_connection((s.host, s.port), timeout=10) as sock:
        sock.sendall(request)
        return int(sock.recv(4096).split()[1])


def test_imds_header_parsing_is_strict(
    endpoint_agent: AgentProcess, served: Callable[..., Served]
) -> None:
    s = served("--imds")
    put = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    status, token = s.get("/latest/api/token", "PUT", **put)
    assert status == 200
    creds = "/latest/meta-data/iam/security-credentials/ec2"
    session = {"X-aws-ec2-metadata-token": token.decode()}
    assert s.get(creds, **session)[0] == 200
    for header, value in (("Forwarded", "for=10.0.0.1"), ("X-Real-IP", "10.0.0.1")):
        assert s.get(creds, **session, **{header: value})[0] == 403
        assert s.get("/latest/api/token", "PUT", **put, **{header: value})[0] == 403
    for ttl in ("+60", "1_0", "0", "21601", "-1", "0x10", "6 0"):
        key = "X-aws-ec2-metadata-token-ttl-seconds"
        assert s.get("/latest/api/token", "PUT", **{key: ttl})[0] == 400, ttl
    arabic = "٦٠".encode()  # Arabic-Indic 60: int() takes it, IMDS must not
    assert (
        _raw(
            s,
            b"PUT /latest/api/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"X-aws-ec2-metadata-token-ttl-seconds: " + arabic + b"\r\n\r\n",
        )
        == 400
    )
    # A flood of session tokens does not evict the one in use.
    conn = http.client.HTTPConnection(s.host, s.port, timeout=10)
    for _ in range(1100):
        conn.request("PUT", "/latest/api/token", headers=put)
        conn.getresponse().read()
    conn.close()
    assert s.get(creds, **session)[0] == 200
    s.stop()


# --------------------------------------------------------------------------- 21. fence, audit

SERIAL = "arn:aws:iam::123456789012:mfa/vaultuser"


def test_after_lock_returns_serve_hands_out_nothing(aws: StandIn, rig: Callable[..., Rig]) -> None:
    aws.enforce_iam(unauthenticated_requests=1_000_000_000)  # as test_root_lock.py
    agent = rig(
        {"ec2": iam_user_role()}, tables=f'mfa_serial = "{SERIAL}"\nunlock_for = "1h"\n'
    ).start()
    agent.cli("unlock", "--code", "123456")
    s = Served(agent)
    token = s.lines["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    try:
        assert s.get(Authorization=token)[0] == 200
        answers: list[tuple[float, int]] = []
        stop = threading.Event()

        def hammer() -> None:
            conn = http.client.HTTPConnection(s.host, s.port, timeout=10)
            while not stop.is_set():
                started = time.monotonic()
                conn.request("GET", s.path, headers={"Authorization": token})
                response = conn.getresponse()
                response.read()
                answers.append((started, response.status))

        thread = threading.Thread(target=hammer)
        thread.start()
        wait_for(lambda: len(answers) > 50, message="the endpoint is busy")
        agent.cli("lock")
        returned = time.monotonic()
        time.sleep(1.5)  # the old cache lived one second
        stop.set()
        thread.join(timeout=20)
        after = [status for started, status in answers if started > returned]
        assert after and set(after) == {503}, sorted(set(after))
    finally:
        s.stop()


def test_every_hand_out_and_refusal_of_exec_is_audited(endpoint_agent: AgentProcess) -> None:
    program = (
        "import os, urllib.request as r, urllib.error\n"
        "url = os.environ['AWS_CONTAINER_CREDENTIALS_FULL_URI']\n"
        "token = os.environ['AWS_CONTAINER_AUTHORIZATION_TOKEN']\n"
        "for _ in range(33):\n"
        "    r.urlopen(r.Request(url, headers={'Authorization': token})).read()\n"
        "try:\n"
        "    r.urlopen(r.Request(url, headers={'Authorization': 'x'}))\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code)\n"
    )
    result = exec_(endpoint_agent, "ec2", "--", sys.executable, "-c", program)
    assert result.returncode == 0 and result.stdout.strip() == "403", result.stderr

    def counted() -> int:
        return sum(
            int(e["count"]) for e in audit_lines(endpoint_agent, op="endpoint", outcome="ok")
        )

    wait_for(lambda: counted() == 33, message="33 hand-outs in the audit log")
    handed = audit_lines(endpoint_agent, op="endpoint", outcome="ok")
    for entry in handed:
        assert entry["role"] == "ec2" and str(entry["access_key_id"]).startswith("AKIA")
        assert entry["first"] <= entry["last"]
        assert entry["client"]["uid"] == os.geteuid()
        assert "dyncreds" in str(entry["peer"]["cmdline"])
    (refused,) = wait_for(lambda: audit_lines(endpoint_agent, op="endpoint", outcome="forbidden"))
    assert refused["count"] == 1 and "wrong authorization token" in str(refused["reason"])
