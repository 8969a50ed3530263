"""The shim on its own: socket path rule, argument checks, error paths."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import dyncreds_shim
from dyncreds import paths
from tests.conftest import SHIM


def run_shim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([SHIM, *args], capture_output=True, timeout=60, env=env)


def test_socket_path_rule_is_shared_with_the_agent(tmp_path: Path) -> None:
    assert dyncreds_shim.socket_path({"DYNCREDS_SOCKET": "/x/a.sock"}) == "/x/a.sock"
    assert (
        dyncreds_shim.socket_path({"XDG_RUNTIME_DIR": "/run/user/7"})
        == "/run/user/7/dyncreds/agent.sock"
    )
    for env in ({"DYNCREDS_SOCKET": "/x/a.sock"}, {"XDG_RUNTIME_DIR": str(tmp_path)}, {}):
        assert str(paths.resolve(env=env).socket) == dyncreds_shim.socket_path(env)


@pytest.mark.process
def test_hot_path_imports_stdlib_builtins_only() -> None:
    tree = ast.parse(Path(dyncreds_shim.__file__).read_text())
    top_level = {
        alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names
    }
    # Builtins only (posix, not os: under -S nothing else imports os, and it costs
    # ~10 % of the shim's run); _socket is what fetch() needs anyway.
    assert top_level <= {"posix", "sys", "_socket"}
    probe = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules);"
            "import dyncreds_shim; dyncreds_shim.main(['r']);"
            "print(sorted(set(sys.modules) - before - {'dyncreds_shim', '_socket'}))",
            str(Path(dyncreds_shim.__file__).parent),
        ],
        env={"DYNCREDS_SOCKET": "/nonexistent"},
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "[]", probe.stderr


@pytest.mark.parametrize("name", ["ok", "a-b_c", "A1", "x" * 64])
def test_valid_role_names(name: str) -> None:
    assert dyncreds_shim.valid_role_name(name)


@pytest.mark.parametrize("name", ["", "-x", "_x", "a b", "a/b", "x" * 65, "é", 'a"b'])
def test_invalid_role_names(name: str) -> None:
    assert not dyncreds_shim.valid_role_name(name)


@pytest.mark.process
def test_usage_errors() -> None:
    result = run_shim()
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr == b"dyncreds-shim: usage: dyncreds-shim ROLE\n"
    result = run_shim('bad"role')
    assert result.returncode == 2
    assert result.stderr.startswith(b"dyncreds-shim: invalid role name")


@pytest.mark.process
def test_agent_not_running(short_dir: Path) -> None:
    env = {"DYNCREDS_SOCKET": str(short_dir / "none.sock"), "PATH": "/usr/bin:/bin"}
    result = run_shim("r", env=env)
    assert result.returncode == 3
    assert result.stdout == b""
    line = result.stderr.decode()
    assert line.count("\n") == 1
    assert line.startswith("dyncreds-shim: the dyncreds agent is not running")
    assert "systemctl --user start dyncreds-agent.socket" in line


def fake_agent(path: Path, reply: bytes | None) -> threading.Thread:
    """A socket that answers one connection with ``reply`` (None: never answers)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        if reply is not None:
            conn.sendall(reply)
            conn.close()
        else:
            conn.recv(1)  # until the shim gives up
            conn.close()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.process
def test_agent_error_is_one_line_on_stderr(short_dir: Path) -> None:
    path = short_dir / "a.sock"
    fake_agent(
        path,
        b'{"ok":false,"error":{"code":"unknown_role","message":"unknown role \'x\' (known: a)"}}\n',
    )
    result = run_shim("x", env={"DYNCREDS_SOCKET": str(path)})
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr == b"dyncreds-shim: unknown role 'x' (known: a) (unknown_role)\n"


@pytest.mark.process
def test_timeout_is_bounded(short_dir: Path) -> None:
    path = short_dir / "a.sock"
    fake_agent(path, None)
    result = run_shim("x", env={"DYNCREDS_SOCKET": str(path), "DYNCREDS_SHIM_TIMEOUT": "0.5"})
    assert result.returncode == 4
    assert result.stderr == b"dyncreds-shim: the dyncreds agent did not answer within 0.5s\n"


def test_default_timeout_is_well_under_go_sdk_minute() -> None:
    assert dyncreds_shim.DEFAULT_TIMEOUT <= 50


@pytest.mark.process
def test_success_bytes_pass_through_unchanged(short_dir: Path) -> None:
    path = short_dir / "a.sock"
    line = (
        b'{"Version":1,"AccessKeyId":"AKIA","SecretAccessKey":"s",'
        b'"Expiration":"2030-01-01T00:00:00Z"}\n'
    )
    fake_agent(path, line)
    result = run_shim("x", env={"DYNCREDS_SOCKET": str(path)})
    assert result.returncode == 0
    assert result.stdout == line
    assert result.stderr == b""


@pytest.mark.process
def test_without_xdg_runtime_dir_the_rule_is_stdlib_only(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    path = dyncreds_shim.socket_path(env)
    run_user = Path(f"/run/user/{os.geteuid()}")
    if not run_user.is_dir():
        assert path == f"{tmp_path}/runtime-{os.geteuid()}/dyncreds/agent.sock"
    # The agent resolves the same path from the same environment.
    assert str(paths.resolve(env=env).socket) == path
    probe = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import dyncreds_shim as m;"
            "print(m.socket_path({})); print(sorted(set(sys.modules) & {'platformdirs'}))",
            str(Path(dyncreds_shim.__file__).parent),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.splitlines()[1] == "[]"  # never imports platformdirs


def test_the_installed_script_stays_a_few_statements() -> None:
    """Python compiles shim/dyncreds-shim on every run (a script has no .pyc): each
    statement costs ~1 % of the shim's run. The fallback is text, compiled only when
    the module is not where a venv, pipx or --user puts it."""
    script = (Path(dyncreds_shim.__file__).parent / "dyncreds-shim").read_text()
    tree = ast.parse(script)
    assert len(tree.body) <= 5, ast.dump(tree)[:400]
    assert sum(1 for _ in ast.walk(tree)) <= 70  # AST nodes: 62 today
