"""A credential type is one module: a toy type written to a temporary module and
registered the one way types register (``kinds.register``) is checked by config
against its row, and issued, served and revoked by the agent through the real
backend's dispatch - with no other edit. And the rows load without trio, boto3
or botocore, as the pure core and the CLI need."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from dyncreds import config, kinds
from dyncreds.agent import Agent
from dyncreds.aws.backend import AwsBackend
from dyncreds.journal.sqlite import SqliteJournal
from tests.fakes import WallClock
from tests.test_agent_timing import inline

TOY = '''
"""A toy credential type: mints made-up keys, journals them, "deletes" them."""

from __future__ import annotations

from typing import Any

import msgspec

from dyncreds.aws.credtypes import Ops
from dyncreds.kinds import Kind


class ToyOptions(msgspec.Struct, kw_only=True):
    """A key only this type has."""

    flavour: str = "vanilla"


KIND = Kind(
    name="toy",
    fields=frozenset({"session_name", "policy_arns"}),
    min_ttl=60,
    max_ttl=2 * 3600,
    extendable=False,
    needs_one_of=("session_name",),
    needs="a toy role needs session_name",
    on_revoke="shredded",
    journal_thing="toy-key",
    options=ToyOptions,
)
ISSUED: list[Any] = []
REVOKED: list[str] = []


async def issue(host, role, lease_id, window, on_step, user):
    from dyncreds.leases import Lease, Secret

    on_step("toy")
    name = host.name(role, 64, user, role.session_name) + "-" + role.options.flavour
    await host.journal.creating(
        lease_id, role.name, name, window.issued_at, window.expires_at, thing="toy-key"
    )
    await host.journal.activate(lease_id, window.expires_at)
    lease = Lease(
        id=lease_id,
        role=role.name,
        credential_type=KIND.name,
        access_key_id="ATOY" + lease_id[-8:].upper(),
        secret_access_key=Secret("toy-secret"),
        session_token=Secret("toy-token"),
        issued_at=window.issued_at,
        expires_at=window.expires_at,
        hard_expires_at=window.hard_expires_at,
        user_name=name,
    )
    ISSUED.append(lease)
    return lease


async def revoke(host, record):
    REVOKED.append(record.user_name)
    return True


OPS = Ops(issue=issue, revoke=revoke)
'''


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The toy type, registered; forgotten again afterwards."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "toy_credtype.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    row = kinds.register("toy_credtype")
    try:
        yield sys.modules["toy_credtype"]
    finally:
        kinds.unregister(row.name)
        sys.modules.pop("toy_credtype", None)


def write(base: Path, roles: dict[str, str]) -> Path:
    (base / "roles").mkdir(parents=True, exist_ok=True)
    (base / "config.toml").write_text('[root]\nregion = "us-east-1"\n')
    for name, text in roles.items():
        (base / "roles" / f"{name}.toml").write_text(text)
    return base


def problems(base: Path) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        config.load(base)
    return [str(p) for p in caught.value.problems]


def test_config_checks_a_toy_role_against_its_row(toy: object, tmp_path: Path) -> None:
    toy = 'credential_type = "toy"\nsession_name = "{user}"\n'
    good = write(tmp_path / "good", {"t": toy + 'flavour = "mint"\n', "plain": toy})
    roles = config.load(good).roles
    assert roles["t"].kind.on_revoke == "shredded" and roles["t"].ttl == 3600  # min(1h, 2h)
    assert roles["t"].options.flavour == "mint" and roles["plain"].options.flavour == "vanilla"
    wrong = write(tmp_path / "wrong", {"t": toy + "flavour = 3\n"})
    assert any("flavour: Expected `str`, got `int`" in p for p in problems(wrong))
    other = write(tmp_path / "other", {"s": 'credential_type = "session_token"\nflavour = "x"\n'})
    assert any("unknown key flavour" in p for p in problems(other))  # the toy's own
    bad = write(tmp_path / "bad", {"t": 'credential_type = "toy"\niam_groups = ["g"]\n'})
    found = problems(bad)
    assert any("iam_groups: not allowed for credential_type toy" in p for p in found)
    assert any("a toy role needs session_name" in p for p in found)
    toy_3h = 'credential_type = "toy"\nsession_name = "x"\nttl = "3h"\n'
    long = write(tmp_path / "long", {"t": toy_3h})
    assert any("toy durations must be between 1m and 2h" in p for p in problems(long))
    # And it is one of the types the CLI and errors list.
    assert "toy" in kinds.names()


async def test_the_agent_issues_serves_and_revokes_a_toy_lease(
    toy: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE12",
        "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(name, value)
    toy_role = 'credential_type = "toy"\nsession_name = "toy-{user}"\nflavour = "mint"\n'
    base = write(tmp_path, {"t": toy_role})
    cfg = config.load(base)
    journal = SqliteJournal(tmp_path / "journal.sqlite3", offload=inline)
    backend = AwsBackend(cfg, journal, "test-agent")  # the real dispatch, no AWS call
    agent = Agent(
        cfg,
        journal,
        backend,
        "test-agent",
        wall=WallClock(),
        load_config=lambda: config.load(base),
        rng=lambda: 0.5,
        offload=inline,
    )
    issued: list[object] = toy.ISSUED  # type: ignore[attr-defined]
    revoked: list[str] = toy.REVOKED  # type: ignore[attr-defined]
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        lease = await agent.credentials("t")
        assert lease.credential_type == "toy" and issued == [lease]
        assert str(lease.user_name).endswith("-mint")  # its own key reached its issue
        assert lease.expires_at - lease.issued_at == 3600  # the core's window
        assert await agent.credentials("t") is lease  # served from memory
        record = journal.get(lease.id)
        assert record is not None and record.thing == "toy-key"
        results = await agent.revoke(lease_id=lease.id)
        assert revoked == [lease.user_name]  # the toy's own revoke, via the reaper
        assert journal.get(lease.id) is None
        assert results == [{"lease_id": lease.id, "outcome": "shredded"}]  # its row's words
        nursery.cancel_scope.cancel()


@pytest.mark.process
def test_loading_config_and_every_row_imports_no_trio_boto3_or_botocore(tmp_path: Path) -> None:
    """The pure core and the CLI load the rows (kinds imports every type module):
    a type module's top level must stay light."""
    roles = {
        "i": 'credential_type = "iam_user"\niam_groups = ["g"]\n',
        "a": 'credential_type = "assumed_role"\nrole_arns = ["arn:aws:iam::123456789012:role/r"]\n',
        "f": 'credential_type = "federation_token"\npolicy_arns = '
        '["arn:aws:iam::aws:policy/ReadOnlyAccess"]\n',
        "s": 'credential_type = "session_token"\n',
        "u": 'credential_type = "static_user"\nusername = "someone"\n',
    }
    base = write(tmp_path, roles)
    script = textwrap.dedent(f"""
        import sys
        from dyncreds import config, kinds
        from pathlib import Path
        cfg = config.load(Path({str(base)!r}))
        assert sorted(r.credential_type for r in cfg.roles.values()) == sorted(kinds.names())
        assert all(name in sys.modules for name in kinds.TYPES)
        print(sorted({{"trio", "boto3", "botocore", "h11"}} & set(sys.modules)))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    # A type module may be the first thing a program imports (it imports kinds,
    # whose rows it is one of).
    first = "import dyncreds.aws.credtypes.static_user\nfrom dyncreds import kinds\nkinds.names()"
    run = subprocess.run([sys.executable, "-c", first], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_no_code_outside_a_type_module_compares_a_type_name() -> None:
    """ARCHITECTURE.md: nobody asks a type's name - the rest asks the row."""
    import re

    names = "|".join(re.escape(n) for n in kinds.names())
    compare = re.compile(
        rf"""[!=]=\s*["']({names})["']|["']({names})["']\s*[!=]=|in \(["']({names})"""
    )
    agent = Path(__file__).resolve().parents[1] / "agent" / "dyncreds"
    found = [
        f"{path.relative_to(agent)}:{number}: {line.strip()}"
        for path in sorted(agent.rglob("*.py"))
        if "credtypes" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if compare.search(line)
    ]
    assert found == []
