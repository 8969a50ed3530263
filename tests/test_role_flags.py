"""`role create` and `role edit` take every field of roles/NAME.toml, for every
credential type: the parser is walked against the schema (a new field without a
flag fails here), a role of each type is written with every field it accepts and
read back by the agent's loader, `role edit` changes and removes fields while the
rest of the file (comments too) stays, and `role show` prints the file as written."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dyncreds import config
from dyncreds.commands import build_parser, main
from dyncreds.commands.roleflags import role_flags
from dyncreds.config.schema import RoleFile
from dyncreds.kinds import KINDS, CredentialType, kind_fields, names

FIELDS = [f.name for f in msgspec.structs.fields(RoleFile)]
POLICY = (
    '{"Version": "2012-10-17", "Statement": '
    '[{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
)
# A valid value for every field, as the TOML file holds it. A new field needs one.
SAMPLES: dict[str, Any] = {
    "policy_document": POLICY,
    "policy_file": "policy.json",
    "policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess", "arn:aws:iam::aws:policy/job"],
    "iam_groups": ["developers"],
    "iam_tags": {"team": "platform", "cost": "42"},
    "user_path": "/dyncreds/",
    "permissions_boundary_arn": "arn:aws:iam::123456789012:policy/boundary",
    "ttl": "1h",
    "max_ttl": "2h",
    "role_arns": ["arn:aws:iam::123456789012:role/deploy"],
    "external_id": "dyncreds",
    "session_tags": {"project": "web"},
    "region": "eu-west-1",
    "prefetch": True,
    "session_name": "{user}-{role}",
    "source_identity": "{user}",
    "revoke_sessions": True,
    "username": "legacy-app",
    "rotation_period": "24h",
}
COMMON = {"ttl", "max_ttl", "region", "prefetch"}


def subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def argv_for(fields: dict[str, Any]) -> list[str]:
    """The command line that sets these fields, built from the flag table."""
    argv: list[str] = []
    for ff in role_flags():
        if ff.field not in fields:
            continue
        value = fields[ff.field]
        if ff.kind == "bool":
            argv.append(ff.flag if value else "--no-" + ff.flag[2:])
        elif ff.kind == "list":
            for item in value:
                argv += [ff.flag, item]
        elif ff.kind == "dict":
            for key, item in value.items():
                argv += [ff.flag, f"{key}={item}"]
        else:
            argv += [ff.flag, value]
    return argv


@pytest.mark.parametrize("action", ["create", "edit"])
def test_the_parser_has_a_flag_for_every_field_of_the_schema(action: str) -> None:
    parser = subparser(build_parser(), "role", action)
    dests = {a.dest for a in parser._actions}
    assert {f"field_{name}" for name in FIELDS} <= dests
    assert set(SAMPLES) | {"credential_type"} == set(FIELDS), "a new field needs a sample"
    flags = [ff.flag for ff in role_flags()]
    assert len(set(flags)) == len(flags)


@pytest.mark.parametrize("kind", names())
def test_role_create_accepts_every_field_of_every_type(
    kind: CredentialType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = (KINDS[kind].fields | COMMON) - {"policy_file"}  # policy_document instead
    if kind == "static_user":
        taken -= {"ttl", "max_ttl"}  # its lifetime is rotation_period
    fields = {k: v for k, v in SAMPLES.items() if k in taken}
    base = ["--config-dir", str(tmp_path), "--socket", str(tmp_path / "none.sock")]
    status = main([*base, "role", "create", "r", "--type", kind, *argv_for(fields)])
    assert status == 0, capsys.readouterr().err
    written = tomllib.loads((tmp_path / "roles" / "r.toml").read_text())
    expected = dict(fields, credential_type=kind)
    if "policy_document" in fields:  # stored indented
        assert msgspec.json.decode(written.pop("policy_document")) == msgspec.json.decode(POLICY)
        expected.pop("policy_document")
    assert written == expected
    role = config.load(tmp_path).roles["r"]  # the agent reads it
    assert role.credential_type == kind
    assert set(fields) - COMMON <= kind_fields()


def test_role_edit_changes_removes_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config-dir", str(tmp_path), "--socket", str(tmp_path / "none.sock")]
    roles = tmp_path / "roles"
    roles.mkdir()
    (roles / "policy.json").write_text(POLICY)
    text = (
        "# deploy role: ask ops before widening\n"
        'credential_type = "assumed_role"\n'
        'role_arns = ["arn:aws:iam::123456789012:role/deploy"]\n'
        'external_id = "old"  # from the vendor\n'
        'ttl = "1h"\n'
    )
    (roles / "d.toml").write_text(text)
    assert main([*base, "role", "show", "d"]) == 0
    assert capsys.readouterr().out == text  # as written, byte for byte
    edit = [*base, "role", "edit", "d", "--external-id", "", "--ttl", "2h", "--prefetch"]
    assert main([*edit, "--policy-file-ref", "policy.json", "--session-tag", "a=b"]) == 0
    after = (roles / "d.toml").read_text()
    assert after.startswith("# deploy role: ask ops before widening\n")
    data = tomllib.loads(after)
    assert "external_id" not in data
    assert data["ttl"] == "2h" and data["prefetch"] is True
    assert data["policy_file"] == "policy.json" and data["session_tags"] == {"a": "b"}
    assert config.load(tmp_path).roles["d"].policy_document is not None
    # Inline policy replaces the reference; a list flag replaces the list.
    arn = "arn:aws:iam::123456789012:role/other"
    assert main([*base, "role", "edit", "d", "--policy-document", POLICY, "--role-arn", arn]) == 0
    data = tomllib.loads((roles / "d.toml").read_text())
    assert "policy_file" not in data and data["role_arns"] == [arn]
    # A refused edit changes nothing.
    before = (roles / "d.toml").read_text()
    capsys.readouterr()
    assert main([*base, "role", "edit", "d", "--username", "x"]) == 2
    assert "username" in capsys.readouterr().err
    assert (roles / "d.toml").read_text() == before
    assert main([*base, "role", "show", "../config"]) == 2


def test_role_delete_removes_the_file_and_names_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config-dir", str(tmp_path), "--socket", str(tmp_path / "none.sock")]
    roles = tmp_path / "roles"
    roles.mkdir()
    (roles / "d.toml").write_text('credential_type = "session_token"\n')
    (roles / "keep.toml").write_text('credential_type = "session_token"\n')
    assert main([*base, "role", "delete", "d"]) == 0
    assert "removed" in capsys.readouterr().out
    assert sorted(p.name for p in roles.iterdir()) == ["keep.toml"]
    assert main([*base, "role", "delete", "d"]) == 2
    assert f"no role 'd' in {roles}" in capsys.readouterr().err
    assert main([*base, "role", "delete", "../keep"]) == 2  # never outside roles/
    assert (roles / "keep.toml").exists()


def test_aws_config_says_what_to_do_without_roles_or_with_a_bad_shim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config-dir", str(tmp_path), "--socket", str(tmp_path / "none.sock")]
    (tmp_path / "roles").mkdir()
    assert main([*base, "aws-config"]) == 2
    err = capsys.readouterr().err
    assert "no roles in" in err and "dyncreds role create NAME" in err
    (tmp_path / "roles" / "r.toml").write_text('credential_type = "session_token"\n')
    assert main([*base, "aws-config", "r", "--shim", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert f"--shim {tmp_path / 'nowhere'}: not an executable file" in err
    assert "name it with --shim" not in err  # the flag was used: not advised again


def test_install_units_elsewhere_says_where_systemd_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert main(["install-units", "--dir", str(tmp_path / "units")]) == 0
    out = capsys.readouterr().out
    assert f"next: copy them to {tmp_path / 'cfg' / 'systemd' / 'user'}, then systemctl" in out
    assert main(["install-units"]) == 0  # where systemd reads them: nothing to copy
    assert "next: systemctl --user daemon-reload" in capsys.readouterr().out
