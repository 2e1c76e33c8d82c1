"""Input hashes: what a case read, so that a rerun can tell a done case from a changed one.

A case's ``input_sha256`` covers its options and the content of every input file (a folder:
every file in it; an image: with the JSON sidecars the pipelines read beside it). The worker
computes it when it runs the case (in parallel, from the files it is about to read) and hands
back each file's digest with its size and modification time; the batch keeps them in
``.batch/digests.json``, so a rerun re-reads only files whose size or time changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..atomic import atomic_path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def sidecars(path: Path) -> List[Path]:
    """Files beside an input image that the pipelines also read: ``<name>.json`` and ``te.json``."""
    name = path.name
    stem = next((name[: -len(s)] for s in IMAGE_SUFFIXES if name.lower().endswith(s)), path.stem)
    return [q for q in (path.with_name(stem + ".json"), path.with_name("te.json")) if q != path and q.is_file()]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_hash(argv: List[str], inputs: List[Path], digest: Optional[Callable[[Path], str]] = None) -> str:
    """sha256 of the options and of the content of every input file."""
    digest = digest or file_sha256
    h = hashlib.sha256()
    h.update("\0".join(argv).encode())
    for p in map(Path, inputs):
        if not p.exists():
            h.update(f"\0missing:{p}".encode())  # the case fails with the command's own message
            continue
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p] + sidecars(p)
        for f in files:
            h.update(f"\0{f.relative_to(p) if p.is_dir() else f.name}\0".encode())
            try:
                h.update(digest(f).encode())
            except OSError as exc:
                h.update(f"unreadable:{exc.errno}".encode())
    return h.hexdigest()


class Recorder:
    """A digest function that also notes (path, size, mtime_ns, digest) of every file it hashed."""

    def __init__(self) -> None:
        self.entries: List[list] = []

    def __call__(self, path: Path) -> str:
        st = os.stat(path)
        d = file_sha256(path)
        self.entries.append([str(path), st.st_size, st.st_mtime_ns, d])
        return d


class DigestCache:
    """``.batch/digests.json``: file digests keyed by path, valid while size and mtime are unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: Dict[str, list] = {}
        self._dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                self.entries = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3}
        except (OSError, ValueError):
            pass  # none yet, or torn: digests are computed again

    def digest(self, path: Path) -> str:
        st = os.stat(path)
        hit = self.entries.get(str(path))
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        d = file_sha256(path)
        self.entries[str(path)] = [st.st_size, st.st_mtime_ns, d]
        self._dirty = True
        return d

    def add(self, entries) -> None:
        for path, size, mtime_ns, d in entries or ():
            self.entries[path] = [size, mtime_ns, d]
            self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.entries), encoding="utf-8")
        self._dirty = False
