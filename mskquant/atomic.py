"""Outputs that are written completely or not at all.

A pipeline writes every result into a hidden staging folder next to its destination and
moves the files into place only once all of them exist, so a failure or a cancel never
leaves a half-written file or a half-filled results folder — and a folder that already
holds results is only replaced when the user says so (``--overwrite``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from .errors import OutputError
from .outputlock import FolderLock

STAGING_PREFIX = ".mskquant-staging-"


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); rename it onto ``path`` on success."""
    path = Path(path)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"Nothing was written to {path}.")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class _NativeStderr:
    def __init__(self) -> None:
        import tempfile

        self.file = tempfile.TemporaryFile()

    def text(self) -> str:
        self.file.seek(0)
        return self.file.read().decode("utf-8", "replace")


@contextlib.contextmanager
def native_stderr_captured():
    """Collect what native libraries (ITK's MetaIO, NRRD) print on file descriptor 2 meanwhile.

    The user sees the one-line error built from it instead of the reader's own chatter.
    """
    import sys

    sink = _NativeStderr()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (embedded interpreter): nothing to capture
        yield sink
        return
    os.dup2(sink.file.fileno(), 2)
    try:
        yield sink
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def write_failure(path: "str | os.PathLike", said: str) -> OutputError:
    """The one-line error for a native writer (ITK, VTK) that failed; ``said`` is what it reported."""
    lines = [ln.strip() for ln in str(said).splitlines() if ln.strip()]
    low = str(said).lower()
    reason = ("no space left on the device" if "space" in low else
              "permission denied" if "permission" in low else (lines[-1][-120:] if lines else "the writer failed"))
    return OutputError(f"Cannot write {path} ({reason}): free some space or choose another output folder.")


class OutputFolder:
    """A results folder filled through a staging area.

    ``OutputFolder(out, expected=[...], overwrite=False)`` checks, before any work starts,
    that ``out`` can be created and written and that it does not already hold any of the
    expected result files (unless ``overwrite``). Use :meth:`path` for every file to write,
    then :meth:`commit` moves them all into ``out``; :meth:`abort` (or an exception inside
    ``with``) removes everything, including ``out`` itself if this object created it.
    """

    def __init__(self, out: "str | os.PathLike", expected: Iterable[str], overwrite: bool = False) -> None:
        self.out = Path(out).expanduser()
        self.expected = list(expected)
        self.overwrite = overwrite
        self._created = False
        self._stage: Path | None = None
        self._lock = FolderLock(self.out)  # before the checks: what they see stays true until the commit
        try:
            self._check()
        except BaseException:
            self._lock.release()
            raise

    def _check(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise OutputError(f"Output path {out} is a file: give a folder for the results.")
        if out.is_dir():
            existing = [n for n in self.expected if (out / n).exists()]
            if existing and not self.overwrite:
                raise OutputError(
                    f"Output folder {out} already holds results ({', '.join(existing[:3])}"
                    f"{'...' if len(existing) > 3 else ''}): choose another folder or pass --overwrite."
                )
            if not os.access(out, os.W_OK | os.X_OK):
                raise OutputError(f"Output folder {out} is not writable: choose a folder you can write to.")
        else:
            parent = out.parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if not parent.is_dir():
                raise OutputError(f"Cannot create output folder {out}: {parent} is a file, not a folder; "
                                  f"choose another output path.")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"Cannot create output folder {out}: {parent} is not writable; "
                                  f"choose a folder you can write to.")

    def __enter__(self) -> "OutputFolder":
        if not self.out.exists():
            try:
                self.out.mkdir(parents=True)
            except OSError as exc:
                raise OutputError(f"Cannot create output folder {self.out}: {exc.strerror}.") from exc
            self._created = True
        else:  # a run killed while writing left its staging folder: this run holds the lock, so it is stale
            for stale in self.out.glob(f"{STAGING_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)
        self._stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out))
        return self

    @property
    def stage(self) -> Path:
        """The staging folder itself (for writers that take a folder)."""
        if self._stage is None:
            raise RuntimeError("OutputFolder used outside its 'with' block")
        return self._stage

    def path(self, name: str) -> Path:
        if self._stage is None:
            raise RuntimeError("OutputFolder used outside its 'with' block")
        p = self._stage / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self) -> list[Path]:
        assert self._stage is not None
        written = []
        for src in sorted(self._stage.rglob("*")):
            if src.is_file():
                dst = self.out / src.relative_to(self._stage)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                written.append(dst)
        shutil.rmtree(self._stage, ignore_errors=True)
        self._stage = None
        return written

    def abort(self) -> None:
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        if self._created:
            shutil.rmtree(self.out, ignore_errors=True)
            self._created = False

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self._stage is not None:
                try:
                    self.commit()
                except OSError as error:
                    exc_type, exc = type(error), error
            if exc_type is not None:
                self.abort()
                if isinstance(exc, OSError):  # disk full, quota, read-only or vanished folder: the user's to fix
                    raise OutputError(f"Cannot write the results into {self.out} ({exc.strerror or exc}): free some "
                                      f"space or choose another output folder; nothing was written.") from exc
        finally:
            self._lock.release()
