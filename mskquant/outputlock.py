"""One run per results folder: an exclusive ``flock`` held while a run may write there.

Two runs writing into one folder would each check that it holds no results, compute, and
each move its files in: both would report success and the folder would hold a mix. A run
therefore locks its output folder before its checks and keeps the lock until its files are
in place. The lock is a kernel ``flock`` on a small file named after the folder's resolved
path in a per-user runtime folder, not in the output folder: a refused or failed run must
leave nothing behind, and a folder that does not exist yet can be locked all the same. The
kernel drops the lock when the process ends, however it ends (SIGKILL included), so a stale
lock file never blocks anyone. The file holds the holder's process id for the message.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Dict

from .errors import OutputError

_HELD: Dict[int, "FolderLock"] = {}


def _lock_nonblocking(fd: int) -> None:
    """An exclusive lock the kernel drops with the process; OSError when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows (Slicer's panels export through OutputFolder too): a byte-range lock
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def lock_dir() -> Path:
    """Where the lock files live: ``$XDG_RUNTIME_DIR/mskquant-locks`` or ``<tmp>/mskquant-locks-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    base = Path(runtime) / "mskquant-locks" if runtime and os.path.isdir(runtime) else \
        Path(tempfile.gettempdir()) / f"mskquant-locks-{user}"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


class FolderLock:
    """``FolderLock(out)`` locks ``out`` or raises :class:`OutputError` naming the process that holds it."""

    def __init__(self, folder: "str | os.PathLike") -> None:
        self.folder = Path(folder).expanduser()
        key = str(self.folder.resolve())
        try:
            self.path = lock_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.lock"
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise OutputError(f"Cannot lock output folder {self.folder} ({exc.strerror}: {exc.filename}): set TMPDIR "
                              f"(or XDG_RUNTIME_DIR) to a folder you can write to.") from None
        try:
            _lock_nonblocking(fd)
        except OSError:  # held by another process
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 64).decode("ascii", "replace").split("\n")[0].strip()
            except OSError:  # Windows forbids reading a locked byte
                holder = ""
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise OutputError(f"Output folder {self.folder} is in use by {who} (another mskquant run is writing "
                              f"there): wait for it to finish, or choose another output folder.") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n{key}\n".encode())
        self._fd = fd
        _HELD[id(self)] = self

    def release(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        _HELD.pop(id(self), None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def __del__(self) -> None:
        self.release()


def release_all() -> None:
    """Drop every lock this process still holds (the CLI calls it when a command ends, however it ends)."""
    for lock in list(_HELD.values()):
        lock.release()
