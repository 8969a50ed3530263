"""Atomic file writes: how the configuration writers, the root's key file and the
static store replace a file, so that a crash or a full disk leaves the old file or
the new one - never a torn one, nor a temp file holding a key. (statedir.py still
writes its small files with its own helper.)"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path


def atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    """Temp file created with ``mode`` in the same directory, fsync, rename over
    ``path``, fsync the directory: a reader sees the old file or the new one,
    never a torn or briefly world-readable one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
            data = text.encode()
            if os.write(fd, data) != len(data):  # a file-size limit cuts it short
                raise OSError(errno.EFBIG, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        # The temp file may hold a secret (a rotated root key): never left behind.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
