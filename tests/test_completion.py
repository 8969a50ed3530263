"""Completion scripts are generated from the parser: every command and flag is in
each, a flag only where it exists, role names and lease ids where they are asked
for. Bash and fish are asked for real completions; zsh is syntax-checked."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dyncreds.commands import build_parser
from dyncreds.commands.completion import SHELLS, script
from tests.test_commands import STATUS

CI = os.environ.get("DYNCREDS_REQUIRE_CLIENTS") == "1"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command's path and parser, the root included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def flags(parser: argparse.ArgumentParser) -> set[str]:
    """The flags a person may type (hidden ones are for the scripts themselves)."""
    return {
        flag
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for flag in action.option_strings
    }


def need(shell: str) -> str:
    found = shutil.which(shell)
    if found is None:
        if CI:
            pytest.fail(f"{shell} is not installed (.ci/install-clients installs it)")
        pytest.skip(f"{shell} is not installed")
    return found


@pytest.mark.parametrize("shell", SHELLS)
def test_every_command_and_flag_is_in_every_script(shell: str) -> None:
    parser = build_parser()
    text = script(parser, shell)
    for path, sub in commands(parser):
        assert all(name in text for name in path), f"{shell}: {path} missing"
        missing = sorted(f for f in flags(sub) if f.lstrip("-") not in text)
        assert not missing, f"{shell}: dyncreds {' '.join(path)} lacks {missing}"


@pytest.fixture
def setup(short_dir: Path) -> Iterator[dict[str, str]]:
    """Two roles in a config dir, and a stand-in agent socket that answers every
    status with two leases; PATH finds this dyncreds (the scripts run it)."""
    roles = short_dir / "config" / "roles"
    roles.mkdir(parents=True)
    for name in ("ec2-full", "deploy"):
        (roles / f"{name}.toml").write_text('credential_type = "session_token"\n')
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(short_dir / "agent.sock"))
    server.listen()
    answer = json.dumps({"ok": True, **STATUS}).encode() + b"\n"

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:  # a client may only connect (paths.discover_socket's probe)
                if conn.recv(65536):
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(short_dir),
            "DYNCREDS_CONFIG_DIR": str(short_dir / "config"),
            "DYNCREDS_SOCKET": str(short_dir / "agent.sock"),
        }
    finally:
        server.close()


# Completes each line (a trailing space: a new word) and prints the offers, one
# block per line; COMP_WORDS as bash would split them.
BASH_DRIVER = """
source "$1"; shift
complete -p dyncreds >/dev/null || exit 9
for line in "$@"; do
  read -ra COMP_WORDS <<< "$line"
  [[ "$line" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _shtab_dyncreds
  printf '%s\\n' "${COMPREPLY[@]}" "--end--"
done
"""


def bash_complete(env: dict[str, str], tmp: Path, lines: list[str]) -> list[set[str]]:
    (tmp / "dyncreds.bash").write_text(script(build_parser(), "bash"))
    run = subprocess.run(
        [need("bash"), "--norc", "-c", BASH_DRIVER, "bash", str(tmp / "dyncreds.bash"), *lines],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    blocks = run.stdout.split("--end--\n")[:-1]
    return [{word for word in block.splitlines() if word} for block in blocks]


@pytest.mark.process
def test_bash_offers_each_command_its_own_flags(setup: dict[str, str], short_dir: Path) -> None:
    pairs = [(path, flags(sub)) for path, sub in commands(build_parser())]
    lines = [" ".join(("dyncreds", *path, "--")) for path, _ in pairs]
    offered = bash_complete(setup, short_dir, lines)
    for (path, expected), got in zip(pairs, offered, strict=True):
        long_flags = {f for f in expected if f.startswith("--")}
        assert got == long_flags, f"dyncreds {' '.join(path)} --<TAB>"
    creds_flags = next(
        got for (path, _), got in zip(pairs, offered, strict=True) if path == ("creds",)
    )
    assert "--format" in creds_flags
    exec_flags = next(
        got for (path, _), got in zip(pairs, offered, strict=True) if path == ("exec",)
    )
    assert "--format" not in exec_flags and {"--env", "--token-file"} <= exec_flags


@pytest.mark.process
def test_bash_offers_roles_and_lease_ids_where_they_are_asked_for(
    setup: dict[str, str], short_dir: Path
) -> None:
    roles, revoke, revoke_role, fmt, subcommand = bash_complete(
        setup,
        short_dir,
        [
            "dyncreds creds ",
            "dyncreds revoke ",
            "dyncreds revoke --role ",
            "dyncreds creds r --format ",
            "dyncreds ro",
        ],
    )
    assert roles == {"ec2-full", "deploy"}
    # revoke takes a lease id: the agent's leases, current and retiring, not role names.
    assert revoke == {
        "ec2-full/1a2b3c4d",
        "deploy-production-account/9f8e7d6c",
        "ec2-full/00000000",
    }
    assert revoke_role == {"ec2-full", "deploy"}
    assert fmt == {"json", "env", "ini", "credential-process"}
    assert subcommand == {"roles", "role", "rotate", "rotate-root"}


@pytest.mark.process
def test_fish_offers_roles_and_each_command_its_own_flags(
    setup: dict[str, str], short_dir: Path
) -> None:
    fish = need("fish")
    path = short_dir / "dyncreds.fish"
    path.write_text(script(build_parser(), "fish"))

    def offers(line: str) -> set[str]:
        run = subprocess.run(
            [fish, "--no-config", "-c", f"source {path}; complete -C {json.dumps(line)}"],
            env=setup,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        return {row.split("\t")[0] for row in run.stdout.splitlines()}

    assert offers("dyncreds creds ") == {"ec2-full", "deploy"}
    assert "--format" in offers("dyncreds creds --")
    assert "--format" not in offers("dyncreds serve --")
    assert {"--listen", "--imds", "--token-file"} <= offers("dyncreds serve --")
    assert offers("dyncreds revoke ") >= {"ec2-full/1a2b3c4d", "ec2-full/00000000"}


@pytest.mark.process
@pytest.mark.parametrize("shell", SHELLS)
def test_every_script_is_valid_syntax(shell: str, tmp_path: Path) -> None:
    path = tmp_path / f"dyncreds.{shell}"
    path.write_text(script(build_parser(), shell))
    run = subprocess.run([need(shell), "-n", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.process
def test_completion_command_prints_the_script_and_lists_words(setup: dict[str, str]) -> None:
    def dyncreds(*argv: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "dyncreds", *argv],
            env=setup,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert dyncreds("completion", "bash") == script(build_parser(), "bash")
    assert set(dyncreds("completion", "--list", "roles").split()) == {"ec2-full", "deploy"}
    leases = dyncreds("completion", "--list", "leases").split()
    assert "ec2-full/00000000" in leases


@pytest.mark.process
def test_zsh_registers_the_completion_for_dyncreds(tmp_path: Path) -> None:
    (tmp_path / "_dyncreds").write_text(script(build_parser(), "zsh"))
    load = (
        "autoload -U compinit; compinit -u -D; "
        f'eval "$(<{tmp_path / "_dyncreds"})"; print -r -- "$_comps[dyncreds]"'
    )
    run = subprocess.run(
        [need("zsh"), "-f", "-c", load],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and run.stdout.strip() == "_shtab_dyncreds", run.stderr
