"""config.toml and roles/*.toml: every problem, with file and line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dyncreds import config
from dyncreds.config import ConfigError, format_duration, parse_duration

POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
    }
)


def write(tmp_path: Path, main: str = "", **roles: str) -> Path:
    (tmp_path / "roles").mkdir(exist_ok=True)
    if main:
        (tmp_path / "config.toml").write_text(main)
    for name, text in roles.items():
        (tmp_path / "roles" / f"{name.replace('_', '-')}.toml").write_text(text)
    return tmp_path


def problems(tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config.load(tmp_path)
    return [str(p) for p in err.value.problems]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        (600, 600),
        ("600", 600),
    ],
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


# Non-ASCII digits (Arabic-Indic, full-width) are digits to Python, not to AWS or people.
@pytest.mark.parametrize(
    "bad", ["", "1x", "m", "-5", -5, True, "1.5h", None, "\u0661\u0662", "\uff11\uff15m"]
)
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration() -> None:
    assert format_duration(5400) == "1h30m"
    assert format_duration(0) == "0s"


def test_absent_config_means_defaults(tmp_path: Path) -> None:
    cfg = config.load(tmp_path)
    assert cfg.main.agent.min_remaining == 1200
    assert cfg.main.lease.max_ttl == 12 * 3600
    assert cfg.roles == {}


def test_every_problem_is_listed_with_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        main='[agent]\nmin_remaining = "20m"\nbogus = 1\n[root]\nmax_retries = "x"\n'
        "[leese]\nttl = 1\n",
        web='credential_type = "session_token"\npolicy_arns = ["nope"]\nttl = "5m"\n',
    )
    found = problems(tmp_path)
    main = tmp_path / "config.toml"
    role = tmp_path / "roles" / "web.toml"
    assert f"{main}:3: unknown key agent.bogus" in found[0]
    assert any(p.startswith(f"{main}:5: root.max_retries") for p in found)
    assert any(p.startswith(f"{main}:6: unknown table [leese]") for p in found)
    assert any(p.startswith(f"{role}:2: policy_arns: not allowed") for p in found)
    assert any(p.startswith(f"{role}:3: ttl: session_token durations") for p in found)


def test_an_unknown_key_does_not_hide_the_roles_other_problems(tmp_path: Path) -> None:
    write(tmp_path, r='credential_type = "assumed_role"\nttl = "13h"\nbogus = 1\n')
    found = problems(tmp_path)
    role = tmp_path / "roles" / "r.toml"
    assert any(p.startswith(f"{role}:3: unknown key bogus") for p in found), found
    assert any(p.startswith(f"{role}:2: ttl: ") for p in found), found
    assert any("needs role_arns" in p for p in found), found


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    write(tmp_path, main="[agent\n")
    (found,) = problems(tmp_path)
    assert found.startswith(f"{tmp_path / 'config.toml'}:1: invalid TOML")


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ('credential_type = "iam_user"\n', "needs at least one of"),
        ('credential_type = "federation_token"\n', "needs policy_document"),
        ('credential_type = "assumed_role"\n', "needs role_arns"),
        ('credential_type = "session_token"\niam_groups = ["g"]\n', "iam_groups: not allowed"),
        (
            f"credential_type = \"iam_user\"\npolicy_document = '{POLICY}'\nrole_arns = "
            '["arn:aws:iam::123456789012:role/x"]\n',
            "role_arns: not allowed",
        ),
        ('credential_type = "iam_user"\npolicy_document = "{not json"\n', "not valid JSON"),
        (
            'credential_type = "iam_user"\npolicy_document = \'{"Statement": ['
            + ",".join(['{"Effect":"Allow","Action":"ec2:DescribeInstances","Resource":"*"}'] * 40)
            + "]}'\n",
            "AWS allows 2048",
        ),
        (
            'credential_type = "assumed_role"\nrole_arns = ["arn:aws:iam::123:role/x"]\n',
            "is not an IAM role ARN",
        ),
        (
            'credential_type = "assumed_role"\nrole_arns = ["arn:aws:iam::123456789012:role/x"]\n'
            'ttl = "13h"\n',
            "between 15m and 12h",
        ),
        (
            f"credential_type = \"iam_user\"\npolicy_document = '{POLICY}'\niam_tags = "
            '{ "dyncreds:x" = "y" }\n',
            "reserved",
        ),
        (
            f'credential_type = "iam_user"\npolicy_document = \'{POLICY}\'\nuser_path = "x"\n',
            "must start and end with /",
        ),
        (
            f'credential_type = "iam_user"\npolicy_document = \'{POLICY}\'\nttl = "2h"\n'
            'max_ttl = "1h"\n',
            "max_ttl: must be at least ttl",
        ),
        ('credential_type = "iam_user"\npolicy_file = "missing.json"\n', "cannot read"),
        (
            'credential_type = "assumed_role"\n'
            'role_arns = ["arn:aws:iam::\u0661\u0662\u0663456789012:role/x"]\n',
            "role_arns",
        ),
        (
            f"credential_type = \"iam_user\"\npolicy_document = '{POLICY}'\n"
            'iam_groups = ["d\u00e9v"]\n',
            "iam_groups",
        ),
        ('credential_type = "nope"\n', "credential_type"),
        ('credential_typo = "iam_user"\n', "unknown key credential_typo"),
    ],
)
def test_role_checks(tmp_path: Path, role: str, message: str) -> None:
    write(tmp_path, r=role)
    found = problems(tmp_path)
    assert any(message in p for p in found), found


def test_valid_roles_resolve_defaults(tmp_path: Path) -> None:
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "ec2.json").write_text(POLICY)
    write(
        tmp_path,
        main='[lease]\nttl = "30m"\nmax_ttl = "2h"\n',
        ec2='credential_type = "iam_user"\npolicy_file = "ec2.json"\n',
        deploy='credential_type = "assumed_role"\nrole_arns = '
        '["arn:aws:iam::123456789012:role/deploy"]\n',
    )
    cfg = config.load(tmp_path)
    ec2, deploy = cfg.roles["ec2"], cfg.roles["deploy"]
    assert (ec2.ttl, ec2.max_ttl) == (1800, 7200)
    assert json.loads(ec2.policy_document or "") == json.loads(POLICY)
    assert (deploy.ttl, deploy.max_ttl) == (3600, 43200)


def test_bad_role_file_name(tmp_path: Path) -> None:
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "-bad.toml").write_text('credential_type = "session_token"\n')
    assert "role name" in problems(tmp_path)[0]


def test_username_template_checked(tmp_path: Path) -> None:
    write(tmp_path, main='[root]\nusername_template = "x-{nope}"\n')
    assert "unknown field {nope}" in problems(tmp_path)[0]
    write(tmp_path, main='[root]\nusername_template = "x-{user}"\n')
    assert "{random} or {unix_time}" in problems(tmp_path)[0]


@pytest.mark.process
def test_check_command_exit_codes(tmp_path: Path) -> None:
    write(tmp_path, r='credential_type = "session_token"\nttl = "1m"\n')
    run = [sys.executable, "-m", "dyncreds", "--config-dir", str(tmp_path), "check"]
    bad = subprocess.run(run, capture_output=True, text=True)
    assert bad.returncode == 2
    assert f"{tmp_path / 'roles' / 'r.toml'}:2: ttl:" in bad.stderr
    (tmp_path / "roles" / "r.toml").write_text('credential_type = "session_token"\n')
    good = subprocess.run(run, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "ok, 1 role (r)" in good.stdout  # not "1 roles"


@pytest.mark.process
def test_credentials_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    write(tmp_path, main='[root]\ncredentials_file = "root.toml"\n')
    creds = tmp_path / "root.toml"
    creds.write_text('access_key_id = "AKIA"\nsecret_access_key = "s"\n')
    creds.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "dyncreds", "--config-dir", str(tmp_path), "check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "accessible by group or others" in result.stderr


def test_role_files_that_are_not_regular_or_too_large_are_problems(tmp_path: Path) -> None:
    roles = tmp_path / "roles"
    roles.mkdir()
    os.mkfifo(roles / "fifo.toml")  # would block a plain read forever
    (roles / "zero.toml").symlink_to("/dev/zero")  # would exhaust memory
    (roles / "big.toml").write_text("# x\n" * 300_000)
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path)
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "fifo.toml: cannot read: not a regular file" in text
    assert "zero.toml: cannot read: not a regular file" in text
    assert "big.toml: cannot read: larger than 1024 KiB" in text


def test_names_that_are_not_utf8_are_shown_escaped(tmp_path: Path) -> None:
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "caf\udce9.toml").write_text('credential_type = "session_token"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path)
    shown = str(caught.value.problems[0])
    assert "caf\\xe9.toml" in shown
    shown.encode("utf-8")  # always encodable: status and logs never break on it


def test_a_roles_path_that_is_a_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "roles").write_text("")
    with pytest.raises(ConfigError, match="roles: is not a directory"):
        config.load(tmp_path)


def test_a_role_ttl_over_the_inherited_max_ttl_is_refused(tmp_path: Path) -> None:
    write(tmp_path, r='credential_type = "iam_user"\niam_groups = ["g"]\nttl = "13h"\n')
    with pytest.raises(ConfigError, match=r"ttl: 13h exceeds \[lease\] max_ttl \(12h\)"):
        config.load(tmp_path)
    write(
        tmp_path,
        r='credential_type = "iam_user"\niam_groups = ["g"]\nttl = "13h"\nmax_ttl = "1d"\n',
    )
    assert config.load(tmp_path).roles["r"].max_ttl == 86400


def test_an_unknown_credential_type_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, r='credential_type = "iam_usr"\n')
    with pytest.raises(ConfigError, match="'iam_usr' is not one of iam_user, assumed_role"):
        config.load(tmp_path)


def test_required_audit_needs_an_audit_file(tmp_path: Path) -> None:
    write(tmp_path, '[audit]\nfile = ""\nrequired = true\n')
    assert any("required" in p and "[audit] file" in p for p in problems(tmp_path))
    write(tmp_path, "[audit]\nrequired = true\n")
    assert config.load(tmp_path).main.audit.required


def test_mfa_process_needs_mfa_serial(tmp_path: Path) -> None:
    write(tmp_path, main='[root]\nmfa_process = "ykman oath accounts code --single aws"\n')
    assert "root.mfa_process: needs root.mfa_serial" in problems(tmp_path)[0]
    write(
        tmp_path,
        main='[root]\nmfa_serial = "arn:aws:iam::123456789012:mfa/me"\n'
        'mfa_process = "ykman oath accounts code --single aws"\n',
    )
    assert config.load(tmp_path).main.root.mfa_process == "ykman oath accounts code --single aws"
