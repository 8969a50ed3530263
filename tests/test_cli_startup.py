"""The CLI starts light: ``dyncreds --version`` and ``dyncreds status`` load no
trio, boto3, botocore or h11 (a command imports what it needs when it runs), every
command module is under the import contract that says so, and a command line
builds only the parser of the command it names - the same parser as the whole."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import dyncreds.commands
from dyncreds.commands import build_parser, named_command
from tests.test_commands import STATUS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("trio", "boto3", "botocore", "h11")
# The trio side of exec and serve: imported by those two commands only, when they run.
RUNS_TRIO = {"dyncreds.commands.endpoint_run"}

# Runs the CLI in a fresh interpreter beside a stand-in agent socket that answers
# one canned status, then names every heavy module the run loaded.
PROBE = """
import json, socket, sys, threading
path, answer, argv = sys.argv[1], sys.argv[2].encode() + b"\\n", json.loads(sys.argv[3])
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen()
def serve():
    conn, _ = server.accept()
    conn.recv(65536)
    conn.sendall(answer)
    conn.close()
threading.Thread(target=serve, daemon=True).start()
from dyncreds.commands import main
try:
    status = main(["--socket", path, *argv])
except SystemExit as exc:
    status = exc.code
watched = {"trio", "boto3", "botocore", "h11", "msgspec", "tomlkit"}
heavy = sorted({m.split(".")[0] for m in sys.modules} & watched)
print(json.dumps({"status": status, "heavy": heavy}), file=sys.stderr)
"""


def run_cli(argv: list[str], short_dir: Path) -> tuple[int, list[str], str]:
    answer = json.dumps({"ok": True, **STATUS})
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(short_dir / "agent.sock"), answer, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(short_dir)},
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["status"], report["heavy"], result.stdout


@pytest.mark.process
@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        # Not even the config's or the protocol's code (msgspec, tomlkit).
        (["--version"], []),
        (["status"], []),
        (["status", "--json"], []),
        # Reading the role files needs the config's code, and only that.
        (["roles"], ["msgspec", "tomlkit"]),
        (["completion", "--list", "roles"], ["msgspec", "tomlkit"]),
    ],
)
def test_light_commands_load_no_trio_boto3_or_h11(
    argv: list[str], allowed: list[str], short_dir: Path
) -> None:
    status, heavy, out = run_cli(argv, short_dir)
    assert status == 0, out
    assert sorted(set(heavy) - set(allowed)) == [], f"dyncreds {' '.join(argv)} loaded {heavy}"
    if argv == ["status"]:  # the table of tests/test_commands.py, relative to now
        assert "ec2-full" in out and "retiring leases" in out


def test_every_command_module_is_under_the_start_up_contract() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    startup = next(c for c in contracts["contracts"] if c["name"].startswith("CLI start-up"))
    assert set(startup["forbidden_modules"]) >= set(HEAVY)
    package = Path(dyncreds.commands.__file__).parent
    modules = {f"dyncreds.commands.{p.stem}" for p in package.glob("*.py")} - {
        "dyncreds.commands.__init__"
    }
    covered = set(startup["source_modules"])
    assert "dyncreds.commands" in covered
    assert modules - RUNS_TRIO <= covered, sorted(modules - RUNS_TRIO - covered)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def helps(parser: argparse.ArgumentParser, path: str = "") -> dict[str, str]:
    """Every (sub)command's help text, by its path."""
    found = {path: parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= helps(sub, f"{path} {name}".strip())
    return found


def test_a_command_line_builds_only_its_command_and_the_same_one() -> None:
    whole = build_parser()
    for name, sub in subparsers(whole).items():
        lazy = build_parser(name)
        assert list(subparsers(lazy)) == [name]
        assert helps(subparsers(lazy)[name], name) == helps(sub, name), name
    # A name that is no command gets the whole parser, whose error lists them all.
    assert list(subparsers(build_parser("bogus"))) == list(subparsers(whole))


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["status"], "status"),
        (["--config-dir", "status", "roles"], "roles"),  # a flag's value is no command
        (["--socket=/s", "--json", "role", "show", "x"], "role"),
        (["--conf", "d", "exec", "r", "--", "env"], "exec"),  # argparse's abbreviations
        (["status", "--config-dir", "d"], "status"),
        (["--help"], None),
        (["--config-dir"], None),  # the whole parser says what is wrong
        ([], None),
    ],
)
def test_the_named_command_is_read_as_argparse_reads_it(
    argv: list[str], command: str | None
) -> None:
    assert named_command(argv) == command
    if command is not None:
        whole = build_parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
        assert whole.subcommand == command
