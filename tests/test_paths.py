"""Where things are: system mode's defaults, and how clients find an agent."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import platformdirs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dyncreds import paths
from dyncreds_shim import SYSTEM_SOCKET, socket_paths


def test_system_mode_defaults_follow_systemds_directories() -> None:
    env = {
        "CONFIGURATION_DIRECTORY": "/etc/dyncreds",
        "STATE_DIRECTORY": "/var/lib/dyncreds",
        "RUNTIME_DIRECTORY": "/run/dyncreds:/run/other",
    }
    got = paths.resolve(env=env, system=True)
    assert got == paths.Paths(
        Path("/etc/dyncreds"), Path("/var/lib/dyncreds"), Path("/run/dyncreds/agent.sock")
    )
    bare = paths.resolve(env={}, system=True)
    assert bare == paths.Paths(
        Path("/etc/dyncreds"), Path("/var/lib/dyncreds"), Path(SYSTEM_SOCKET)
    )
    # The usual overrides still win.
    env["DYNCREDS_SOCKET"] = "/tmp/x.sock"
    assert paths.resolve(env=env, system=True).socket == Path("/tmp/x.sock")
    assert paths.resolve(state_dir="/srv/s", env=env, system=True).state_dir == Path("/srv/s")


def test_user_mode_ignores_a_services_directories(tmp_path: Path) -> None:
    """A CLI run inside some other service must not take that service's dirs."""
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "CONFIGURATION_DIRECTORY": "/etc/other"}
    assert paths.resolve(env=env).config_dir != Path("/etc/other")


def test_clients_try_their_own_socket_then_the_system_agents(tmp_path: Path) -> None:
    own = f"{tmp_path}/dyncreds/agent.sock"
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert socket_paths(env) == [own, SYSTEM_SOCKET]
    assert socket_paths({**env, "DYNCREDS_SOCKET": "/x.sock"}) == ["/x.sock"]
    # Nobody listens on the user's socket: the user's path is kept for the
    # "not running" message unless the system agent answers.
    found = paths.discover_socket(env)
    assert found in (own, SYSTEM_SOCKET)
    (tmp_path / "dyncreds").mkdir()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(own)
        listener.listen()
        assert paths.discover_socket(env) == own
        assert paths.resolve(env=env, discover=True).socket == Path(own)


HOMES = [None, "/home/ann", "/home/ann/", "/", "", "relative/home"]
XDG_VALUES = [None, "/xdg/base", "/xdg/base/", "", "   ", "relative/xdg", "~/xdg"]


@pytest.mark.parametrize("home", HOMES)
@pytest.mark.parametrize("xdg", XDG_VALUES)
@pytest.mark.parametrize(
    ("variable", "default", "theirs"),
    [
        ("XDG_CONFIG_HOME", ".config", platformdirs.user_config_dir),
        ("XDG_STATE_HOME", ".local/state", platformdirs.user_state_dir),
    ],
)
def test_user_dirs_are_platformdirs_own(
    monkeypatch: pytest.MonkeyPatch,
    home: str | None,
    xdg: str | None,
    variable: str,
    default: str,
    theirs: Callable[[str], str],
) -> None:
    """The CLI computes its default dirs without importing platformdirs (a third of
    `status`'s start-up): the same answer as platformdirs for every HOME and XDG
    value, relative and empty ones included."""
    env = {"HOME": home, variable: xdg}
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    ours = paths.user_dir(os.environ, variable, default)
    assert ours == theirs(paths.APP)
    given = {name: value for name, value in env.items() if value is not None}
    assert paths.user_dir(given, variable, default) == ours


def test_resolve_uses_the_user_dirs(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": f"{tmp_path}/state", "XDG_RUNTIME_DIR": "/r"}
    got = paths.resolve(env=env)
    assert got.config_dir == tmp_path / ".config" / "dyncreds"
    assert got.state_dir == tmp_path / "state" / "dyncreds"
    assert got.socket == Path("/r/dyncreds/agent.sock")


@given(st.text(alphabet="/.ab", max_size=12))
def test_absolute_text_is_pathlibs(path: str) -> None:
    """`status` writes its socket path without importing pathlib: the same text."""
    assert paths.absolute_text(path) == str(Path(path).absolute())


@pytest.mark.parametrize("flag", [None, "", "/x//y/./a.sock", "rel/a.sock", "//two/a.sock"])
def test_client_socket_is_the_paths_socket(tmp_path: Path, flag: str | None) -> None:
    env = {"XDG_RUNTIME_DIR": f"{tmp_path}/", "HOME": str(tmp_path)}
    expected = paths.resolve(socket=flag, env=env, discover=True).socket
    assert paths.client_socket(flag, env) == str(expected)
