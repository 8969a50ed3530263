"""System mode's rules (access.py), the door that gathers who asks (gate.py),
the [[access]] configuration, and per-consumer leases in the agent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
import trio.testing

from dyncreds import config, protocol
from dyncreds.access import Asker, Policy
from dyncreds.commands import imds
from dyncreds.config import AccessRule
from dyncreds.gate import Door
from tests.fakes import FakeBackend, lease_of
from tests.test_agent_timing import IAM, STATIC, Harness, harness  # noqa: F401 - fixture

AGENT_UID = 990
ALICE = Asker(1001, "alice", frozenset({"alice"}))
BOB = Asker(1002, "bob", frozenset({"bob", "developers"}))
MALLORY = Asker(1003, "mallory", frozenset({"mallory"}))

RULES = (
    AccessRule(users=["alice"], roles=["ec2"], ops=["credentials", "status", "revoke"]),
    AccessRule(groups=["developers"], roles=["ci-*", "deploy"]),
    AccessRule(users=["ops"], ops=["admin"]),
)
POLICY = Policy(RULES, AGENT_UID)


def creds(role: str) -> protocol.AnyRequest:
    return protocol.CredentialProcess(role=role)


def test_a_rule_names_users_groups_and_globs() -> None:
    assert POLICY.decide(ALICE, creds("ec2")) is None
    assert POLICY.decide(BOB, creds("ci-build")) is None  # group + glob
    assert POLICY.decide(BOB, protocol.GetCredentials(role="deploy")) is None
    assert POLICY.decide(BOB, creds("ec2")) is not None
    assert POLICY.decide(ALICE, creds("ci-build")) is not None
    assert POLICY.decide(MALLORY, creds("ec2")) is not None


def test_forbidden_is_one_line_naming_the_user_and_the_role() -> None:
    error = POLICY.decide(MALLORY, creds("ec2"))
    assert isinstance(error, protocol.Forbidden) and error.code == "forbidden"
    assert "user mallory (uid 1003)" in error.message and "role ec2" in error.message
    assert "\n" not in error.message


def test_ops_default_to_credentials_and_status() -> None:
    assert POLICY.decide(BOB, protocol.Status()) is None
    assert POLICY.decide(BOB, protocol.Renew(role="deploy")) is not None  # no "revoke"
    assert POLICY.decide(ALICE, protocol.Renew(role="ec2")) is None
    # A lease id names its role.
    assert POLICY.decide(ALICE, protocol.Revoke(lease_id="ec2/0000abcd")) is None
    assert POLICY.decide(ALICE, protocol.Revoke(lease_id="deploy/0000abcd")) is not None


def test_admin_ops_need_an_admin_and_ping_needs_nobody() -> None:
    for request in (protocol.Reload(), protocol.RotateRoot(), protocol.Lock()):
        assert POLICY.decide(ALICE, request) is not None
        assert POLICY.decide(Asker(5, "ops", frozenset()), request) is None
    assert POLICY.decide(MALLORY, protocol.Ping()) is None


def test_the_agents_own_uid_and_root_are_always_admin() -> None:
    for uid in (0, AGENT_UID):
        asker = Asker(uid, "x", frozenset())
        assert POLICY.admin(asker)
        assert POLICY.decide(asker, creds("anything")) is None
    assert not POLICY.admin(ALICE)


def test_visible_roles_are_those_the_asker_may_see() -> None:
    assert POLICY.visible(BOB, ["ec2", "deploy", "ci-x", "other"]) == ["deploy", "ci-x"]
    assert POLICY.visible(MALLORY, ["ec2"]) == []


# --------------------------------------------------------------------------- the door


class Users:
    """A user database that counts its reads."""

    def __init__(self) -> None:
        self.groups = {1002: {"bob"}}
        self.reads = 0

    def read(self, uid: int) -> Asker:
        self.reads += 1
        return Asker(uid, "bob", frozenset(self.groups[uid]))


async def test_decisions_are_cached_and_groups_reread_at_most_once_a_second() -> None:
    now = [100.0]
    users = Users()
    rules = [AccessRule(groups=["developers"], roles=["deploy"])]
    door = Door(lambda: rules, AGENT_UID, clock=lambda: now[0], read=users.read)
    visitor = door.connection(1002)
    with pytest.raises(protocol.Forbidden):
        await visitor.check(creds("deploy"))
    for _ in range(1000):
        with pytest.raises(protocol.Forbidden):
            await visitor.check(creds("deploy"))
    assert users.reads == 1
    users.groups[1002].add("developers")  # usermod -aG: seen within a second
    now[0] += 0.5
    with pytest.raises(protocol.Forbidden):
        await visitor.check(creds("deploy"))
    now[0] += 0.6
    await visitor.check(creds("deploy"))
    assert users.reads == 2
    # Another connection of the same user shares the read.
    await door.connection(1002).check(creds("deploy"))
    assert users.reads == 2


async def test_a_herd_of_new_connections_reads_the_user_database_once() -> None:
    users = Users()
    rules = [AccessRule(groups=["bob"], roles=["deploy"])]
    door = Door(lambda: rules, AGENT_UID, clock=lambda: 0.0, read=users.read)
    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(door.connection(1002).check, creds("deploy"))
    assert users.reads == 1


async def test_a_reload_applies_to_open_connections_at_once() -> None:
    rules = [AccessRule(groups=["bob"], roles=["deploy"])]
    holder = [rules]
    users = Users()
    door = Door(lambda: holder[0], AGENT_UID, clock=lambda: 0.0, read=users.read)
    visitor = door.connection(1002)
    await visitor.check(creds("deploy"))
    holder[0] = [AccessRule(groups=["bob"], roles=["other"])]
    with pytest.raises(protocol.Forbidden):
        await visitor.check(creds("deploy"))


# --------------------------------------------------------------------------- config


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.toml").write_text(text)
    return tmp_path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        config.load(write(tmp_path, text))
    return [str(p) for p in caught.value.problems]


def test_access_rules_load(tmp_path: Path) -> None:
    cfg = config.load(
        write(
            tmp_path,
            '[agent]\nmode = "system"\n\n[[access]]\nusers = ["alice"]\nroles = ["ec2-*"]\n\n'
            '[[access]]\ngroups = ["ops"]\nops = ["admin"]\n',
        )
    )
    assert cfg.main.agent.mode == "system"
    first, second = cfg.main.access
    assert first.roles == ["ec2-*"] and first.ops == ["credentials", "status"]
    assert second.roles == ["*"] and second.ops == ["admin"]


def test_access_rule_problems_name_the_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path, '[agent]\nmode = "system"\n\n[[access]]\nroles = ["x"]\nops = ["sudo"]\n'
    )
    assert any("config.toml:6:" in p and "sudo" in p for p in found), found
    found = problems(
        tmp_path,
        '[agent]\nmode = "system"\n\n[[access]]\nusers = ["a"]\n\n[[access]]\nroles = ["x"]\n',
    )
    assert found == [
        f"{tmp_path}/config.toml:7: [[access]] rule 2: names nobody: give users or groups"
    ]
    found = problems(tmp_path, '[agent]\nmode = "system"\n\n[[access]]\nuser = ["a"]\n')
    assert any("config.toml:5:" in p and "unknown key access.user" in p for p in found), found


def test_access_rules_need_system_mode(tmp_path: Path) -> None:
    found = problems(tmp_path, '[[access]]\nusers = ["alice"]\n')
    assert any('agent.mode = "system"' in p for p in found), found


# --------------------------------------------------------------------------- leases


async def test_each_consumer_has_its_own_lease_and_single_flight(
    harness: Harness,  # noqa: F811 - the imported fixture
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    agent = await harness({"r": IAM}, 'mode = "system"', backend=backend)
    leases: dict[str, list[str]] = {"alice": [], "bob": []}

    async def ask(who: Asker) -> None:
        leases[who.user].append((await agent.credentials("r", who)).access_key_id)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(ask, ALICE)
            nursery.start_soon(ask, BOB)
    assert len(set(leases["alice"])) == len(set(leases["bob"])) == 1
    assert leases["alice"][0] != leases["bob"][0]
    assert sorted(backend.consumers, key=str) == ["alice", "bob"]  # one issuance each
    assert {w.key for w in agent.workers.values()} == {("r", 1001), ("r", 1002)}
    # A non-admin's status: its own lease, nobody else's.
    rows = agent.status(only=["r"], owner=1001)["roles"]
    assert [(r["name"], r["consumer"]) for r in rows] == [("r", "alice")]
    everyone = agent.status()["roles"]
    assert sorted(r["consumer"] for r in everyone) == ["alice", "bob"]
    # Revoking as alice leaves bob's lease alone.
    revoked = await agent.revoke(role="r", owner=1001)
    assert len(revoked) == 1 and revoked[0]["lease_id"].startswith("r/")
    assert lease_of(agent, "r", ALICE) is None
    assert lease_of(agent, "r", BOB) is not None


async def test_a_static_user_is_one_lease_for_everyone(
    harness: Harness,  # noqa: F811 - the imported fixture
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    agent = await harness({"s": STATIC}, 'mode = "system"', backend=backend)
    a = await agent.credentials("s", ALICE)
    b = await agent.credentials("s", BOB)
    assert a.access_key_id == b.access_key_id
    assert backend.consumers == [None]


# --------------------------------------------------------------------------- IMDS


@pytest.mark.process  # runs nft, when installed
def test_the_imds_warning_is_for_a_system_agent_whose_root_is_an_instance_role() -> None:
    instance = "arn:aws:sts::123456789012:assumed-role/web/i-0123456789abcdef0"
    assert re.search(imds.INSTANCE_ROLE, instance)
    assert not re.search(imds.INSTANCE_ROLE, "arn:aws:sts::123456789012:assumed-role/web/alice")
    assert not re.search(imds.INSTANCE_ROLE, "arn:aws:iam::123456789012:user/vaultuser")
    user_mode = {"agent": {"mode": "user"}, "root": {"arn": instance}}
    assert imds.status_warning(user_mode) is None
    assert imds.check_warning("system", "credentials_file") is None
    system = {"agent": {"mode": "system"}, "root": {"arn": instance}}
    loaded = imds.guard_loaded()
    warning = imds.status_warning(system)
    if loaded is False:  # nft answers and the table is not there
        assert warning is not None and "IMDS" in warning and "nft -f" in warning
    else:  # loaded, or cannot tell (not root, no nft): say nothing
        assert warning is None
