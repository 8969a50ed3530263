"""Real Unix users for the system-mode tests: made with useradd, removed after,
and programs run as them with setpriv (the tests run as root, as CI does).

The interpreter of the test venv may live where other users cannot reach it
(pyenv under /root): then the users run a system Python of the same version
with the venv's packages on PYTHONPATH.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = sysconfig.get_paths()["purelib"]


def _reachable_by_all(path: Path) -> bool:
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in (real, *real.parents))


def user_python() -> str:
    """A Python every user may run, of this Python's version."""
    if _reachable_by_all(Path(sys.executable)):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if Path(candidate).exists() and _reachable_by_all(Path(candidate)):
            return candidate
    pytest.fail(f"no {version} that other users may run (the venv's is {sys.executable})")


@functools.cache
def user_shim() -> str:
    """The shim as another user runs it here. The installed script runs its
    install's Python with -I (PYTHONPATH ignored); where that Python is out of the
    users' reach (pyenv under /root) and the install is editable, they run the
    same module through a system Python of this version instead."""
    installed = Path(sys.executable).parent / "dyncreds-shim"
    if _reachable_by_all(Path(sys.executable)):
        return str(installed)
    folder = Path(tempfile.gettempdir()) / f"dyncreds-user-shim-{os.getpid()}"
    folder.mkdir(mode=0o755, exist_ok=True)
    wrapper = folder / "dyncreds-shim"
    wrapper.write_text(
        f"#!{user_python()}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'shim')!r})\n"
        "import dyncreds_shim\n"
        "sys.exit(dyncreds_shim.main())\n"
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def user_env(**extra: str) -> dict[str, str]:
    """A clean environment for a program run as another user: no DYNCREDS_* and
    no XDG_RUNTIME_DIR, so clients find the agent by the socket rule."""
    env = {
        "PATH": f"{Path(user_python()).parent}:/usr/bin:/bin",
        "PYTHONPATH": f"{REPO / 'agent'}:{REPO / 'shim'}:{SITE}",
        "HOME": "/",
        "LANG": "C.UTF-8",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(extra)
    return env


def as_user(user: str) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]


@dataclass
class Host:
    """The users and the group of one test module."""

    tag: str
    made_users: list[str] = field(default_factory=list)
    made_groups: list[str] = field(default_factory=list)

    def name(self, who: str) -> str:
        return f"dc{who}{self.tag}"

    def user(self, who: str, groups: tuple[str, ...] = ()) -> str:
        name = self.name(who)
        command = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-U"]
        if groups:
            command += ["-G", ",".join(groups)]
        subprocess.run([*command, name], check=True, capture_output=True)
        self.made_users.append(name)
        return name

    def group(self, who: str) -> str:
        name = self.name(who)
        subprocess.run(["groupadd", name], check=True, capture_output=True)
        self.made_groups.append(name)
        return name

    def run(
        self, user: str, *argv: str, timeout: float = 90, socket: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """``socket``: DYNCREDS_SOCKET (else clients find the agent by the rule)."""
        if socket is not None:
            env["DYNCREDS_SOCKET"] = socket
        return subprocess.run(
            [*as_user(user), *argv],
            env=user_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
        )

    def cleanup(self) -> None:
        for name in reversed(self.made_users):
            subprocess.run(["userdel", name], capture_output=True)
        for name in self.made_groups:
            subprocess.run(["groupdel", name], capture_output=True)


def host_fixture() -> Iterator[Host]:
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"):
        if os.environ.get("DYNCREDS_REQUIRE_CLIENTS"):
            pytest.fail("system-mode tests need root, useradd and setpriv")
        pytest.skip("system-mode tests need root, useradd and setpriv")
    host = Host(secrets.token_hex(2))
    opened = _open_the_way(REPO / "agent", REPO / "shim", Path(SITE))
    try:
        yield host
    finally:
        host.cleanup()
        for folder, mode in opened:
            folder.chmod(mode)


def _open_the_way(*targets: Path) -> list[tuple[Path, int]]:
    """The users run this checkout's code and the venv's packages: where a folder on
    the way is closed to them (a clone under /root, say), it gets o+x (search, not
    listing) for the test's length. Returns what to restore."""
    opened: list[tuple[Path, int]] = []
    for target in targets:
        for folder in reversed((target.resolve(), *target.resolve().parents)):
            mode = folder.stat().st_mode & 0o7777
            if not mode & 0o001 and folder not in [f for f, _ in opened]:
                folder.chmod(mode | 0o001)
                opened.append((folder, mode))
    return opened
