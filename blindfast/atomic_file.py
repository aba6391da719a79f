"""Writing a file atomically, with the permissions a plain ``open`` would give it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["save_atomic"]


def save_atomic(path, write: Callable[[BinaryIO], object], *, durable: bool = False) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``: readers never see
    a half-written file, and an exception leaves ``path`` as it was.

    Args:
        path: the file to write (its folder must exist).
        write: writes the content to the binary file it is given.
        durable: also flush the file to disk before the rename and the folder after it, so that ``path`` holds
            the new content even after a power loss (for checkpoints; costs two ``fsync``).
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's permissions
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    if durable:
        _fsync_folder(folder)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _fsync_folder(folder: str) -> None:
    """Makes a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
