"""Every location rule in one place: config dir, state dir, socket.

Precedence everywhere: command-line flag, then environment, then platformdirs'
default. The socket rule itself lives in the shim (``dyncreds_shim.socket_path``)
because the shim must find the socket without importing anything heavy; the
agent uses the very same function so the two always agree.

System mode (one agent for the host's users) has its own defaults, systemd's
directories first: ``$CONFIGURATION_DIRECTORY`` or /etc/dyncreds,
``$STATE_DIRECTORY`` or /var/lib/dyncreds, ``$RUNTIME_DIRECTORY/agent.sock`` or
/run/dyncreds/agent.sock. Clients (``discover``) use the user's own socket when
an agent answers there, else the system agent's - the shim's rule.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import NamedTuple

import platformdirs

from dyncreds_shim import SYSTEM_SOCKET, socket_paths
from dyncreds_shim import socket_path as _shim_socket_path

APP = "dyncreds"
SYSTEM_CONFIG = "/etc/dyncreds"
SYSTEM_STATE = "/var/lib/dyncreds"


class Paths(NamedTuple):
    # A NamedTuple, not a dataclass: every CLI command resolves its paths, and
    # importing dataclasses (inspect, ast ...) was a fifth of `status`'s start-up.
    config_dir: Path
    state_dir: Path
    socket: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def roles_dir(self) -> Path:
        return self.config_dir / "roles"

    @property
    def journal(self) -> Path:
        return self.state_dir / "journal.sqlite3"

    def role_file(self, name: str) -> Path:
        return self.roles_dir / f"{name}.toml"


def resolve(
    config_dir: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    socket: str | os.PathLike[str] | None = None,
    env: dict[str, str] | os._Environ[str] | None = None,
    *,
    system: bool = False,
    discover: bool = False,
) -> Paths:
    """``system``: a system-mode agent's defaults. ``discover``: a client's socket
    (the first of the user's own and the system agent's that answers)."""
    env = os.environ if env is None else env
    config = config_dir or env.get("DYNCREDS_CONFIG_DIR")
    state = state_dir or env.get("DYNCREDS_STATE_DIR")
    sock = socket or (discover_socket(env) if discover else None)
    if system:
        config = config or _systemd(env, "CONFIGURATION")
        runtime = _systemd(env, "RUNTIME")
        state = state or _systemd(env, "STATE") or SYSTEM_STATE
        sock = sock or env.get("DYNCREDS_SOCKET") or (f"{runtime}/agent.sock" if runtime else None)
        sock = sock or SYSTEM_SOCKET
    return Paths(
        config_dir=Path(
            config or (SYSTEM_CONFIG if system else platformdirs.user_config_path(APP))
        ).absolute(),
        state_dir=Path(state or platformdirs.user_state_path(APP)).absolute(),
        socket=Path(sock or _shim_socket_path(env)).absolute(),
    )


def _systemd(env: dict[str, str] | os._Environ[str], kind: str) -> str | None:
    """systemd's ``$<KIND>_DIRECTORY`` (the first, if it lists several)."""
    value = env.get(f"{kind}_DIRECTORY")
    return value.split(":")[0] if value else None


def discover_socket(env: dict[str, str] | os._Environ[str]) -> str:
    """The first socket of ``socket_paths`` that an agent answers on; else the
    user's own (whose "not running" message says how to start one)."""
    candidates = socket_paths(env)
    for path in candidates:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(2)
            probe.connect(path)
            return path
        except OSError:
            continue
        finally:
            probe.close()
    return candidates[0]
