"""System mode end to end: one agent, run as a service user, serves the host's
real Unix users by [[access]] rules - through the shim, `exec` and the CLI, each
finding the agent by the socket rule (no DYNCREDS_SOCKET).

Users and groups are made with useradd and removed after; clients run as them
with setpriv. AWS is moto's server with IAM enforcement.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import boto3
import pytest

from dyncreds.aws.standin import StandIn
from dyncreds.client import Client
from dyncreds_shim import SYSTEM_SOCKET
from tests.conftest import AgentProcess, iam_user_role, make_assumable_role, temp_users
from tests.conftest import wait_for as wait_until
from tests.e2e.hostusers import Host, as_user, host_fixture, user_env, user_python, user_shim


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    yield from host_fixture()


class SystemAgent(AgentProcess):
    """An agent in system mode, run as ``service`` the way the system unit runs it:
    config in a directory only it can read, state from $STATE_DIRECTORY, the
    socket in a 0755 runtime directory it owns (systemd's RuntimeDirectory=)."""

    def __init__(
        self,
        base: Path,
        aws: StandIn,
        roles: dict[str, str],
        service: str,
        rules: str,
        socket: Path = Path(SYSTEM_SOCKET),
    ):
        super().__init__(base, aws, roles, 'mode = "system"\n', rules)
        self.service = service
        self.socket = socket
        self.state_dir = base / "lib"

    def start(self, extra_env: dict[str, str] | None = None, activate: bool = False) -> SystemAgent:
        """``activate``: as the system socket unit would, with systemd-socket-activate
        holding a 0666 socket and starting the agent at the first connection."""
        os.chmod(self.base, 0o755)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self.socket.parent.mkdir(mode=0o755, exist_ok=True)
        for top in (self.config_dir, self.state_dir, self.socket.parent):
            shutil.chown(top, self.service, self.service)
            for parent, dirs, names in os.walk(top):
                for name in dirs + names:
                    shutil.chown(Path(parent) / name, self.service, self.service)
        os.chmod(self.config_dir, 0o700)
        env = user_env(
            STATE_DIRECTORY=str(self.state_dir),
            RUNTIME_DIRECTORY=str(self.socket.parent),
            **(extra_env or {}),
        )
        command = [*self.command(), "agent"]
        if activate:
            passed = [f"--setenv={key}={value}" for key, value in env.items()]
            activator = ["systemd-socket-activate", "--listen", str(self.socket), "--fdname=agent"]
            command = [*activator, *passed, *command]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=self._log)
        if activate:  # SocketMode=0666 (systemd-socket-activate has no such option)
            wait_until(self.socket.exists, message="the activation socket")
            os.chmod(self.socket, 0o666)
        wait_until(self._ready, message=f"system agent ready (log: {self.log_path})")
        return self

    def command(self) -> list[str]:
        return [
            *as_user(self.service),
            user_python(),
            "-m",
            "dyncreds",
            "--config-dir",
            str(self.config_dir),
        ]


@pytest.fixture
def system_agent(aws: StandIn, short_dir: Path) -> Iterator[list[SystemAgent]]:
    agents: list[SystemAgent] = []
    yield agents
    for agent in agents:
        if agent.process and agent.process.poll() is None:
            agent.stop()
        if agent.socket == Path(SYSTEM_SOCKET):  # only one test listens there
            shutil.rmtree(agent.socket.parent, ignore_errors=True)


def need(tool: str) -> str:
    """A tool of the system-mode tests (.ci/install-clients installs them)."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found is None:
        if os.environ.get("DYNCREDS_REQUIRE_CLIENTS"):
            pytest.fail(f"{tool} is not installed (.ci/install-clients installs it)")
        pytest.skip(f"{tool} is not installed")
    return found


def shim(
    host: Host, user: str, role: str, socket: str | None = None
) -> subprocess.CompletedProcess[str]:
    return host.run(user, user_shim(), role, socket=socket)


def key_of(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["AccessKeyId"])


def cli(
    host: Host, user: str, *args: str, socket: str | None = None
) -> subprocess.CompletedProcess[str]:
    return host.run(user, user_python(), "-m", "dyncreds", *args, socket=socket)


def forbidden(result: subprocess.CompletedProcess[str], user: str, role: str) -> bool:
    line = result.stderr.strip()
    return result.returncode == 1 and "forbidden" in line and user in line and role in line


HERD = """
import json, subprocess, sys
shims = [subprocess.Popen([sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE) for _ in range(100)]
keys = [json.loads(p.communicate()[0])["AccessKeyId"] for p in shims]
print(json.dumps(sorted(set(keys))))
"""

WHO = "import boto3; print(boto3.Session().get_credentials().get_frozen_credentials().access_key)"


def test_a_system_agent_serves_each_user_by_the_rules(
    host: Host, aws: StandIn, short_dir: Path, system_agent: list[SystemAgent]
) -> None:
    service = host.user("svc")
    dev = host.group("dev")
    alice, bob, carol = host.user("alice"), host.user("bob", (dev,)), host.user("carol")
    dave, mallory = host.user("dave"), host.user("mallory")
    deploy = make_assumable_role(aws)
    rules = f"""
        [[access]]
        users = ["{alice}"]
        roles = ["ec2"]
        ops = ["credentials", "status", "revoke"]

        [[access]]
        groups = ["{dev}"]
        roles = ["ec2"]
        ops = ["credentials", "status", "revoke"]

        [[access]]
        users = ["{carol}"]
        roles = ["ci-*"]
        """
    roles = {
        "ec2": iam_user_role(),
        "secret": iam_user_role(),
        "ci-build": textwrap.dedent(f"""\
            credential_type = "assumed_role"
            role_arns = ["{deploy}"]
            session_name = "{{user}}-{{role}}"
            source_identity = "{{user}}"
            """),
    }
    agent = SystemAgent(short_dir, aws, roles, service, rules)
    system_agent.append(agent)
    agent.start()

    # A herd of one consumer's shims: one issuance, one key.
    herd = host.run(bob, user_python(), "-c", HERD, user_shim(), "ec2", timeout=180)
    assert herd.returncode == 0, herd.stderr
    (bob_key,) = json.loads(herd.stdout)
    # Allowed users get their own keys through the shim, the CLI and exec.
    alice_key = key_of(shim(host, alice, "ec2"))
    assert alice_key != bob_key
    users = temp_users(aws)
    assert len(users) == 2, users
    assert [u for u in users if alice in u] and [u for u in users if bob in u]
    creds = cli(host, alice, "creds", "ec2", "--format", "credential-process")
    assert key_of(creds) == alice_key
    run = host.run(
        alice, user_python(), "-m", "dyncreds", "exec", "ec2", "--", user_python(), "-c", WHO
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == alice_key
    # The glob rule; the session names its consumer (CloudTrail says who).
    carol_creds = json.loads(shim(host, carol, "ci-build").stdout)
    sts = boto3.client(
        "sts",
        endpoint_url=aws.endpoint,
        region_name="us-east-1",
        aws_access_key_id=carol_creds["AccessKeyId"],
        aws_secret_access_key=carol_creds["SecretAccessKey"],
        aws_session_token=carol_creds["SessionToken"],
    )
    assert sts.get_caller_identity()["Arn"].endswith(f"/deploy/{carol}-ci-build")

    # Everyone else: forbidden, in one line naming the user and the role.
    assert forbidden(shim(host, mallory, "ec2"), mallory, "ec2")
    assert forbidden(shim(host, carol, "ec2"), carol, "ec2")
    assert forbidden(shim(host, alice, "secret"), alice, "secret")
    assert forbidden(shim(host, alice, "ci-build"), alice, "ci-build")
    refused = cli(host, mallory, "creds", "ec2")
    assert refused.returncode == 1 and mallory in refused.stderr, refused.stderr

    # A group rule follows the user database, without a restart.
    assert forbidden(shim(host, dave, "ec2"), dave, "ec2")
    subprocess.run(["gpasswd", "-a", dave, dev], check=True, capture_output=True)
    dave_key = key_of(wait_until(lambda: _ok(shim(host, dave, "ec2")), timeout=15))
    assert dave_key not in (alice_key, bob_key)
    subprocess.run(["gpasswd", "-d", dave, dev], check=True, capture_output=True)
    wait_until(lambda: forbidden(shim(host, dave, "ec2"), dave, "ec2"), timeout=15)

    _check_isolation(host, agent, alice, bob, mallory, alice_key, bob_key)
    _check_audit(agent, alice, bob, carol, mallory)


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str] | None:
    return result if result.returncode == 0 else None


def _check_isolation(
    host: Host,
    agent: SystemAgent,
    alice: str,
    bob: str,
    mallory: str,
    alice_key: str,
    bob_key: str,
) -> None:
    """No consumer reads the root, the journal or the audit log, sees another's
    lease or revokes it."""
    secrets_on_disk = [
        agent.config_dir / "root-credentials.toml",
        agent.state_dir / "journal.sqlite3",
        agent.state_dir / "audit.jsonl",
    ]
    for path in secrets_on_disk:
        assert path.exists(), path
        for user in (alice, mallory):
            read = host.run(user, "cat", str(path))
            assert read.returncode != 0 and "Permission denied" in read.stderr, (path, user)

    with Client(agent.socket) as admin:
        rows = admin.request("status")["roles"]
    bob_lease = next(r["lease_id"] for r in rows if r["consumer"] == bob)
    assert {r["consumer"] for r in rows if r["name"] == "ec2"} >= {alice, bob}

    seen = cli(host, alice, "status", "--json")
    assert seen.returncode == 0, seen.stderr
    status = json.loads(seen.stdout)
    assert {r["name"] for r in status["roles"]} == {"ec2"}
    assert {r["consumer"] for r in status["roles"]} == {alice}
    assert bob_lease not in seen.stdout and bob_key not in seen.stdout
    assert status["retiring"] == [] and status["revocations"] == []

    profiles = cli(host, alice, "aws-config", "--shim", user_shim())  # roles from the agent
    assert profiles.returncode == 0, profiles.stderr
    assert "[profile ec2]" in profiles.stdout and "secret" not in profiles.stdout

    assert cli(host, alice, "revoke", bob_lease).returncode == 1
    refused = cli(host, mallory, "revoke", "--role", "ec2")
    assert refused.returncode == 1 and f"user {mallory}" in refused.stderr, refused.stderr
    assert "may not revoke or renew leases of role ec2" in refused.stderr
    revoked = cli(host, alice, "revoke", "--role", "ec2")
    assert revoked.returncode == 0, revoked.stderr
    assert bob_lease not in revoked.stdout
    assert key_of(shim(host, bob, "ec2")) == bob_key
    assert key_of(shim(host, alice, "ec2")) != alice_key


def _check_audit(agent: SystemAgent, alice: str, bob: str, carol: str, mallory: str) -> None:
    """Every hand-out and every refusal names its consumer."""

    def entries() -> list[dict[str, Any]]:
        path = agent.state_dir / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def has(user: str, role: str, outcome: str) -> bool:
        return any(
            e["peer"]["user"] == user and e["role"] == role and e["outcome"] == outcome
            for e in entries()
        )

    wait_until(lambda: has(mallory, "ec2", "forbidden"), message="the refusal in the audit log")
    assert has(alice, "ec2", "ok") and has(bob, "ec2", "ok") and has(carol, "ci-build", "ok")
    assert has(carol, "ec2", "forbidden") and has(alice, "secret", "forbidden")
    for entry in entries():
        assert entry["peer"]["user"], entry


# --------------------------------------------------------------------------- systemd


def test_system_units_install_and_verify(short_dir: Path) -> None:
    need("systemd-analyze")
    target = short_dir / "units"
    result = subprocess.run(
        [sys.executable, "-m", "dyncreds", "install-units", "--system", "--dir", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    service = (target / "dyncreds-agent.service").read_text()
    socket_unit = (target / "dyncreds-agent.socket").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith("dyncreds --config-dir /etc/dyncreds agent"), exec_start
    for directive in (
        "User=dyncreds",
        "ConfigurationDirectory=dyncreds",
        "StateDirectory=dyncreds",
        "RuntimeDirectory=dyncreds",
        "RuntimeDirectoryMode=0755",
        "LoadCredentialEncrypted=dyncreds-root",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallFilter=@system-service",
    ):
        assert directive in service, directive
    assert "SocketMode=0666" in socket_unit and "DirectoryMode=0755" in socket_unit
    assert "u dyncreds " in (target / "dyncreds.conf").read_text()
    verify = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(target / "dyncreds-agent.socket"),
            str(target / "dyncreds-agent.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stdout + verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(target / "dyncreds-agent.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    exposure = security.stdout.strip().splitlines()[-1]
    assert "Overall exposure level" in exposure and "OK" in exposure, security.stdout[-500:]


def test_socket_activation_as_the_service_user(
    host: Host, aws: StandIn, short_dir: Path, system_agent: list[SystemAgent]
) -> None:
    """systemd-socket-activate plays the system socket unit (SocketMode=0666); the
    agent runs as the service user and serves a user by the rules."""
    need("systemd-socket-activate")
    service, erin, frank = host.user("svc2"), host.user("erin"), host.user("frank")
    rules = f'[[access]]\nusers = ["{erin}"]\nroles = ["ec2"]\n'
    agent = SystemAgent(
        short_dir, aws, {"ec2": iam_user_role()}, service, rules, short_dir / "run" / "agent.sock"
    )
    system_agent.append(agent)
    agent.start(activate=True)
    assert agent.process is not None
    assert "activated=True" in agent.log() or '"activated": true' in agent.log()
    status = Path(f"/proc/{agent.process.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == str(pwd.getpwnam(service).pw_uid)
    assert stat.S_IMODE(agent.socket.stat().st_mode) == 0o666
    sock = str(agent.socket)
    assert key_of(host.run(erin, user_shim(), "ec2", socket=sock))
    assert forbidden(host.run(frank, user_shim(), "ec2", socket=sock), frank, "ec2")


# --------------------------------------------------------------------------- IMDS


def test_the_imds_rule_checks_and_is_reported_when_missing(host: Host, short_dir: Path) -> None:
    """The shipped nftables rule is valid (``nft -c``); ``check`` warns about a
    system agent on the default chain (on EC2: the instance role) while the rule
    is not loaded, and is quiet once it is."""
    nft = need("nft")
    service = host.user("svc3")
    shipped = (files("dyncreds") / "share" / "nftables" / "dyncreds-imds.nft").read_text()
    rule = short_dir / "imds.nft"
    rule.write_text(shipped.replace('"dyncreds"', f'"{service}"'))
    checked = subprocess.run([nft, "-c", "-f", str(rule)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    config_dir = short_dir / "config"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(
        f'[agent]\nmode = "system"\n\n[[access]]\nusers = ["{service}"]\n'
    )

    def check() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "dyncreds", "--config-dir", str(config_dir), "check"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stderr

    if subprocess.run(
        [nft, "list", "table", "inet", "dyncreds_imds"], capture_output=True
    ).returncode:
        assert "IMDS" in check() and "nft -f" in check()
    loaded = subprocess.run([nft, "-f", str(rule)], capture_output=True, text=True)
    if loaded.returncode != 0:  # a container without netfilter: the check above is what counts
        pytest.skip(f"cannot load nftables rules here: {loaded.stderr.strip()}")
    try:
        assert "IMDS" not in check()
    finally:
        subprocess.run([nft, "delete", "table", "inet", "dyncreds_imds"], capture_output=True)


# --------------------------------------------------------------------------- MFA


def test_an_admin_unlocks_a_system_agent(
    host: Host, aws: StandIn, short_dir: Path, system_agent: list[SystemAgent]
) -> None:
    """With root.mfa_serial the system agent starts locked; a consumer's shim gets
    the one `locked` line and may not unlock it; an admin (root) does."""
    aws.enforce_iam(unauthenticated_requests=1_000_000_000)  # see test_root_lock.py
    service, gina = host.user("svc4"), host.user("gina")
    serial = "arn:aws:iam::123456789012:mfa/vaultuser"
    tables = (
        f'mfa_serial = "{serial}"\nunlock_for = "1h"\n\n'
        f'[[access]]\nusers = ["{gina}"]\nroles = ["s"]\n'
    )
    role = 'credential_type = "session_token"\nttl = "1h"\n'
    sock = short_dir / "run" / "agent.sock"
    agent = SystemAgent(short_dir, aws, {"s": role}, service, tables, sock)
    system_agent.append(agent)
    agent.start()
    locked = shim(host, gina, "s", socket=str(sock))
    assert locked.returncode == 1 and "(locked)" in locked.stderr, locked.stderr
    refused = cli(host, gina, "unlock", "--code", "123456", socket=str(sock))
    assert refused.returncode == 1 and f"user {gina}" in refused.stderr, refused.stderr
    assert agent.cli("unlock", "--code", "123456").stdout.startswith("unlocked until ")
    assert key_of(shim(host, gina, "s", socket=str(sock)))


# --------------------------------------------------------------------------- fleet


def test_a_system_agent_in_a_fleet(
    host: Host, aws: StandIn, short_dir: Path, system_agent: list[SystemAgent]
) -> None:
    """The fleet's table records each consumer's IAM user; `fleet status` is an
    admin's."""
    service, hana = host.user("svc5"), host.user("hana")
    tables = f"""
        [fleet]
        table = "dyncreds-fleet"
        name = "bastions"
        endpoint = "{aws.endpoint}"
        heartbeat = "1s"
        dead_after = "4s"

        [[access]]
        users = ["{hana}"]
        roles = ["ec2"]
        """
    sock = short_dir / "run" / "agent.sock"
    agent = SystemAgent(short_dir, aws, {"ec2": iam_user_role()}, service, tables, sock)
    system_agent.append(agent)
    assert "dyncreds-fleet" in agent.cli("fleet", "init").stdout
    agent.start()
    key_of(shim(host, hana, "ec2", socket=str(sock)))
    (user,) = temp_users(aws)
    assert hana in user
    fleet = json.loads(agent.cli("fleet", "status", "--json").stdout)
    assert [p["user"] for p in fleet["pending"]] == [user]
    refused = cli(host, hana, "fleet", "status", socket=str(sock))
    assert refused.returncode == 1 and f"user {hana}" in refused.stderr, refused.stderr
