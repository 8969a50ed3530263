"""Every location rule in one place: config dir, state dir, socket.

Precedence everywhere: command-line flag, then environment, then platformdirs'
default. The socket rule itself lives in the shim (``dyncreds_shim.socket_path``)
because the shim must find the socket without importing anything heavy; the
agent uses the very same function so the two always agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from dyncreds_shim import socket_path as _shim_socket_path

APP = "dyncreds"


@dataclass(frozen=True)
class Paths:
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
) -> Paths:
    env = os.environ if env is None else env
    return Paths(
        config_dir=Path(
            config_dir or env.get("DYNCREDS_CONFIG_DIR") or platformdirs.user_config_path(APP)
        ).absolute(),
        state_dir=Path(
            state_dir or env.get("DYNCREDS_STATE_DIR") or platformdirs.user_state_path(APP)
        ).absolute(),
        socket=Path(socket or _shim_socket_path(env)).absolute(),
    )
