"""Every location rule in one place: config dir, state dir, socket.

Precedence everywhere: command-line flag, then environment, then platformdirs'
default (on Linux computed here by platformdirs' own rule, ``user_dir``: importing
platformdirs was a third of ``dyncreds status``'s start-up; tests/test_paths.py
checks the two agree). The socket rule itself lives in the shim (``dyncreds_shim.socket_path``)
because the shim must find the socket without importing anything heavy; the
agent uses the very same function so the two always agree.

System mode (one agent for the host's users) has its own defaults, systemd's
directories first: ``$CONFIGURATION_DIRECTORY`` or /etc/dyncreds,
``$STATE_DIRECTORY`` or /var/lib/dyncreds, ``$RUNTIME_DIRECTORY/agent.sock`` or
/run/dyncreds/agent.sock. Clients (``discover``) use the user's own socket when
an agent answers there, else the system agent's - the shim's rule.
"""

from __future__ import annotations

import _socket  # builtin; `socket` builds enums on import (a tenth of the CLI's start-up)
import os
import sys
from collections import namedtuple

from dyncreds_shim import SYSTEM_SOCKET, socket_paths
from dyncreds_shim import socket_path as _shim_socket_path

APP = "dyncreds"
SYSTEM_CONFIG = "/etc/dyncreds"
SYSTEM_STATE = "/var/lib/dyncreds"

TYPE_CHECKING = False  # mypy reads the block below; `typing` is not imported at run time
if TYPE_CHECKING:
    from pathlib import Path
    from typing import NamedTuple

    class _Fields(NamedTuple):
        config_dir: Path
        state_dir: Path
        socket: Path

else:
    # A namedtuple, not a dataclass nor typing's NamedTuple: every CLI command
    # resolves its paths, and importing dataclasses (inspect, ast ...) or typing was
    # a fifth, then a tenth, of `status`'s start-up.
    _Fields = namedtuple("Paths", ("config_dir", "state_dir", "socket"))


class Paths(_Fields):
    __slots__ = ()

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
    from pathlib import Path  # (not at the top: `status` needs only ``client_socket``)

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
            config or (SYSTEM_CONFIG if system else user_dir(env, "XDG_CONFIG_HOME", ".config"))
        ).absolute(),
        state_dir=Path(state or user_dir(env, "XDG_STATE_HOME", ".local/state")).absolute(),
        socket=Path(sock or _shim_socket_path(env)).absolute(),
    )


def client_socket(
    socket: str | os.PathLike[str] | None = None,
    env: dict[str, str] | os._Environ[str] | None = None,
) -> str:
    """``resolve(socket=socket, env=env, discover=True).socket`` as text, for a
    command that needs no other path: building ``Paths`` imports pathlib, a tenth
    of ``dyncreds status``'s start-up."""
    env = os.environ if env is None else env
    return absolute_text(os.fspath(socket) if socket else discover_socket(env))


def absolute_text(path: str) -> str:
    """``str(Path(path).absolute())`` without pathlib: relative to the working
    directory, empty and ``.`` parts dropped, ``..`` kept, and two leading slashes
    (but not one or three) kept, as POSIX allows (tests/test_paths.py compares)."""
    if not path.startswith("/"):
        path = os.getcwd() + "/" + path
    parts = path.lstrip("/")
    root = "//" if len(path) - len(parts) == 2 else "/"
    return root + "/".join(part for part in parts.split("/") if part and part != ".")


def user_dir(env: dict[str, str] | os._Environ[str], variable: str, default: str) -> str:
    """platformdirs' ``user_config_dir(APP)`` / ``user_state_dir(APP)`` on Linux (the
    XDG Base Directory rule as platformdirs 4 applies it): ``$VARIABLE`` when it is
    an absolute path (the spec says to ignore a relative one), else ``~/DEFAULT``,
    where ``~`` is an absolute ``$HOME``, else the user database's home. Elsewhere,
    platformdirs itself."""
    if sys.platform != "linux":
        import platformdirs

        dirs = platformdirs.PlatformDirs(APP)
        return dirs.user_config_dir if variable == "XDG_CONFIG_HOME" else dirs.user_state_dir
    base = env.get(variable, "")
    if not base.startswith("/"):
        home = env.get("HOME", "")
        if not home.startswith("/"):
            import pwd  # builtin

            try:
                home = pwd.getpwuid(os.getuid()).pw_dir
            except KeyError:
                home = ""
        if not home.startswith("/"):
            raise RuntimeError(
                f"could not determine the home directory for ~/{default}: "
                f"set an absolute HOME or {variable}"
            )
        base = home.rstrip("/") + "/" + default
    return os.path.join(base, APP)


def _systemd(env: dict[str, str] | os._Environ[str], kind: str) -> str | None:
    """systemd's ``$<KIND>_DIRECTORY`` (the first, if it lists several)."""
    value = env.get(f"{kind}_DIRECTORY")
    return value.split(":")[0] if value else None


def discover_socket(env: dict[str, str] | os._Environ[str]) -> str:
    """The first socket of ``socket_paths`` that an agent answers on; else the
    user's own (whose "not running" message says how to start one)."""
    candidates = socket_paths(env)
    for path in candidates:
        probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            probe.settimeout(2)
            probe.connect(path)
            return path
        except OSError:
            continue
        finally:
            probe.close()
    return candidates[0]
