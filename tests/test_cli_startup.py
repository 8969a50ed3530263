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
# one canned status, then names every watched module the run loaded. The stand-in
# uses the builtin _socket and _thread, so that it loads none of them itself.
PROBE = """
import _socket, _thread, json, sys
path, answer, argv = sys.argv[1], sys.argv[2].encode() + b"\\n", json.loads(sys.argv[3])
server = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
server.bind(path)
server.listen()
def serve():
    fd, _ = server._accept()
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
    conn.recv(65536)
    conn.sendall(answer)
    conn.close()
_thread.start_new_thread(serve, ())
from dyncreds.commands import main
try:
    status = main(["--socket", path, *argv])
except SystemExit as exc:
    status = exc.code
watched = {"trio", "boto3", "botocore", "h11", "msgspec", "tomlkit", *sys.argv[4:]}
heavy = sorted({m.split(".")[0] for m in sys.modules} & watched)
print(json.dumps({"status": status, "heavy": heavy}), file=sys.stderr)
"""

# Not heavy, but each a tenth (pathlib, typing, socket, platformdirs) or a twentieth
# (datetime, contextlib, dataclasses) of the CLI's start-up: `--version` and `status`
# do without them (the README's start-up ratios depend on it).
START_UP_COSTS = ["pathlib", "typing", "socket", "platformdirs", "datetime", "contextlib"]
START_UP_COSTS += ["dataclasses"]


def run_cli(argv: list[str], short_dir: Path, bare: bool) -> tuple[int, list[str], str]:
    """``bare``: without site (this venv's editable install loads pathlib and
    contextlib from a .pth file), the package's sources on PYTHONPATH: nothing
    outside the standard library is importable, as none is needed."""
    answer = json.dumps({"ok": True, **STATUS})
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(short_dir)}
    if bare:
        env["PYTHONPATH"] = f"{ROOT / 'agent'}:{ROOT / 'shim'}"
    result = subprocess.run(
        [sys.executable, *(["-S"] if bare else []), "-c", PROBE, str(short_dir / "agent.sock"),
         answer, json.dumps(argv), *START_UP_COSTS],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["status"], report["heavy"], result.stdout


@pytest.mark.process
@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        # Not even the config's or the protocol's code (msgspec, tomlkit), nor
        # anything outside the standard library.
        (["--version"], None),
        (["status"], None),
        (["status", "--json"], None),
        # Reading the role files needs the config's code, and only that.
        (["roles"], ["msgspec", "tomlkit", *START_UP_COSTS]),
        (["completion", "--list", "roles"], ["msgspec", "tomlkit", *START_UP_COSTS]),
    ],
)
def test_light_commands_load_no_trio_boto3_or_h11(
    argv: list[str], allowed: list[str] | None, short_dir: Path
) -> None:
    """``allowed`` None: the run loads none of the watched modules, and no module
    from outside the standard library."""
    status, heavy, out = run_cli(argv, short_dir, bare=allowed is None)
    assert status == 0, out
    loaded = sorted(set(heavy) - set(allowed or []))
    assert loaded == [], f"dyncreds {' '.join(argv)} loaded {heavy}"
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
