"""Where things are: system mode's defaults, and how clients find an agent."""

from __future__ import annotations

import socket
from pathlib import Path

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
