"""The CLI explains itself: --version, help on every option, the status table
(relative times, 80 columns, colour only where wanted), errors as sentences."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import pytest

from dyncreds.client import CliError
from dyncreds.commands import build_parser, report
from dyncreds.commands.render import render_status, use_colour

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def stamp(offset: float) -> str:
    from dyncreds.protocol import rfc3339

    return rfc3339(NOW + offset)


STATUS = {
    "agent": {"version": "0.2.0", "id": "0123456789abcdef", "pid": 4242, "uptime": 7260},
    "root": {
        "arn": "arn:aws:iam::123456789012:user/vaultuser",
        "error": None,
        "source": "credentials_file",
        "region": "us-east-1",
    },
    "roles": [
        {
            "name": "ec2-full",
            "type": "iam_user",
            "state": "ready",
            "lease_id": "ec2-full/1a2b3c4d",
            "access_key_id": "AKIAEXAMPLEEXAMPLE12",
            "issued_at": stamp(-25 * 60),
            "expires_at": stamp(35 * 60),
            "next_action": f"extend at {stamp(10 * 60)}",
            "last_error": None,
        },
        {
            "name": "deploy-production-account",
            "type": "assumed_role",
            "state": "idle",
            "lease_id": "deploy-production-account/9f8e7d6c",
            "access_key_id": "ASIAEXAMPLEEXAMPLE34",
            "issued_at": stamp(-3 * 3600),
            "expires_at": stamp(-120),
            "next_action": f"idle; expire at {stamp(-120)}",
            "last_error": "AWS AssumeRole failed: AccessDenied",
        },
    ],
    "retiring": [
        {
            "lease_id": "ec2-full/00000000",
            "user_name": "dyncreds-me-ec2-full-1799990000-ab12",
            "revoke_at": stamp(33 * 60),
            "irrevocable": False,
            "last_error": None,
        }
    ],
    "counters": {"served": 12},
}

SNAPSHOT_80 = """\
dyncreds 0.2.0  agent 0123456789abcdef  pid 4242  up 2h1m
root: arn:aws:iam::123456789012:user/vaultuser  (credentials_file, us-east-1)

ROLE                       STATE  LEFT            NEXT
ec2-full                   ready  35m             extend in 10m
deploy-production-account  idle   expired 2m ago  idle; expire 2m ago
deploy-production-account: last error: AWS AssumeRole failed: AccessDenied

retiring leases (revoked at the expiry they announced):
  ec2-full/00000000  dyncreds-me-ec2-full-1799990000-ab12  revoke in 33m

counters: served=12"""


def test_status_snapshot_fits_80_columns_with_relative_times() -> None:
    text = render_status(STATUS, NOW, width=80)
    assert text == SNAPSHOT_80
    assert max(len(line) for line in text.splitlines()) <= 80


def test_status_shows_every_column_when_there_is_room() -> None:
    wide = render_status(STATUS, NOW, width=160)
    header = wide.splitlines()[3].split()
    assert header == ["ROLE", "TYPE", "STATE", "LEASE", "KEY", "AGE", "LEFT", "NEXT"]
    assert "25m" in wide and "AKIAEXAMPLEEXAMPLE12" in wide


def test_status_on_a_narrow_terminal_cuts_the_sentence_not_the_names() -> None:
    text = render_status(STATUS, NOW, width=60)
    assert all(len(line) <= 60 for line in text.splitlines()[2:6])
    assert "deploy-production-account" in text and "…" in text


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_colour(Tty())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Tty())  # type: ignore[arg-type]
    assert "\033[" in render_status(STATUS, NOW, colour=True)
    assert "\033[" not in render_status(STATUS, NOW, colour=False)


def _options(parser: argparse.ArgumentParser, path: str = "dyncreds") -> list[tuple[str, str]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            found.append((path, "/".join(action.option_strings) or action.dest))
    return found


def test_every_option_and_argument_has_help() -> None:
    assert _options(build_parser()) == []


@pytest.mark.process
def test_version_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dyncreds", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("dyncreds ")


@pytest.mark.process
def test_demo_help_lists_only_what_applies() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dyncreds", "demo", "--help"], capture_output=True, text=True
    )
    assert "--socket" not in result.stdout and "--config-dir" not in result.stdout


def test_errors_are_sentences_for_people_and_codes_for_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = CliError("unknown role 'x' (known: a, b)", 1, code="unknown_role")
    report(error, as_json=False)
    err = capsys.readouterr().err
    assert "(unknown_role)" not in err and "dyncreds role create" in err
    report(error, as_json=True)
    assert '"code": "unknown_role"' in capsys.readouterr().out


@pytest.mark.process
def test_conflicting_revoke_flags_are_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dyncreds", "--socket", "/nonexistent", "revoke", "r/1", "--all"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "exactly one of" in result.stderr


def test_status_wraps_a_warning_and_never_cuts_it() -> None:
    warning = (
        "the root key is in a plain file (root-credentials.toml): "
        "`dyncreds configure root --store keyring` moves it to the OS keyring"
    )
    root: dict[str, Any] = dict(STATUS["root"])  # type: ignore[call-overload]
    status = dict(STATUS, root=dict(root, warning=warning, error="x " * 50))
    for width in (40, 60, 80):
        text = render_status(status, NOW, width=width)
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("warning: "))
        joined = lines[start]
        for line in lines[start + 1 :]:
            if not line.startswith("  "):
                break
            joined += " " + line.strip()
        assert joined == f"warning: {warning}"
        assert "`dyncreds configure root --store keyring`" in text  # a command stays whole
        # Over the width only when a single word (an ARN) or a `command` is longer.
        for line in lines[1 : lines.index("")]:  # the sentences above the table
            assert len(line) <= width or "`" in line or " " not in line.strip(), line


def test_system_mode_status_names_each_lines_consumer() -> None:
    roles = [
        {**STATUS["roles"][0], "consumer": "alice"},  # type: ignore[index]
        {**STATUS["roles"][0], "consumer": "bob", "lease_id": "ec2-full/22222222"},  # type: ignore[index]
        {**STATUS["roles"][1], "consumer": None},  # type: ignore[index]
    ]
    text = render_status({**STATUS, "roles": roles}, NOW, width=100)
    assert "ec2-full (alice)" in text and "ec2-full (bob)" in text
    assert "deploy-production-account  " in text
