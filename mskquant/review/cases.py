"""Which cases a review folder holds, of which pipeline, and which of them a reader has reviewed.

``PATH`` is one case output folder (``vhi.json``, ``knee_t2.json`` or ``pain.json`` in it) or a
folder of such folders (a batch output: its case folders up to two levels down). Reviews live
inside each case folder, per reader, so a case can be moved with its reviews.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from mskquant.errors import InputError

MARKERS = {"vhi": "vhi.json", "knee-t2": "knee_t2.json", "pain-cam": "pain.json"}
READERS_DIR = "readers"
READER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
CAM_REVIEW_FILE = "review.csv"


def check_reader(name: str) -> str:
    if not READER_NAME.match(name or "") or ".." in name:
        raise InputError(f"Reader name {name!r} is not usable as a folder name: use letters, digits, '.', '_' or '-' "
                         f"(at most 40, e.g. --reader A or --reader jsmith).")
    return name


def kind_of(folder: Path) -> Optional[str]:
    for kind, marker in MARKERS.items():
        if (folder / marker).is_file():
            return kind
    return None


AUTOSAVE_DIR = "autosave"


@dataclass
class Case:
    folder: Path
    kind: str
    root: Path

    @property
    def id(self) -> str:
        rel = self.folder.resolve().relative_to(self.root.resolve())
        return "." if str(rel) == "." else rel.as_posix()

    def summary(self) -> dict:
        try:
            return json.loads((self.folder / MARKERS[self.kind]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def reader_dir(self, reader: str) -> Path:
        return self.folder / READERS_DIR / check_reader(reader)

    def autosave_dir(self, reader: str) -> Path:
        """Where a reader's unsaved edits are kept (``readers/<NAME>/autosave``)."""
        return self.reader_dir(reader) / AUTOSAVE_DIR

    def save_reader_files(self, reader: str, names, write, autosave: bool = False) -> Path:
        """``write(stage)`` writes ``names`` into the reader's folder (or its autosave folder), all of them
        replaced together; a real save also drops the autosave."""
        import shutil

        from mskquant.atomic import OutputFolder

        folder = self.autosave_dir(reader) if autosave else self.reader_dir(reader)
        with OutputFolder(folder, names, overwrite=True) as out:
            write(out.stage)
        if not autosave:
            shutil.rmtree(self.autosave_dir(reader), ignore_errors=True)
        return folder

    def readers(self) -> List[str]:
        d = self.folder / READERS_DIR
        return sorted(p.name for p in d.iterdir() if p.is_dir() and READER_NAME.match(p.name)) if d.is_dir() else []

    def reviewed_by(self, reader: str) -> bool:
        d = self.reader_dir(reader)
        if self.kind == "pain-cam":
            f = self.folder / CAM_REVIEW_FILE
            return f.is_file() and any(line.split(",")[0] == reader for line in f.read_text(encoding="utf-8").splitlines()[1:])
        return (d / MARKERS[self.kind]).is_file()

    def main_measure(self) -> str:
        s = self.summary()
        try:
            if self.kind == "vhi":
                key = s.get("primary", "sensitive")
                return f"V_HI {key} {s['vhi_ml'][key]:.2f} mL"
            if self.kind == "pain-cam":
                return f"{s['painful_side']} painful (p right {s['p_right_painful']:.2f})"
            if self.kind == "knee-t2":
                return f"T2 {s['t2']['mean_ms']:.1f} ms" if "t2" in s and "mean_ms" in s["t2"] else "knee T2"
        except (KeyError, TypeError, ValueError):
            pass
        return self.kind


def find_cases(path: "str | Path") -> List[Case]:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InputError(f"{root} is not a folder: give a case output folder of vhi, knee-t2 or pain-cam, or a "
                         f"batch output folder.")
    kind = kind_of(root)
    if kind is not None:
        return [Case(root, kind, root)]
    cases = []
    for level in ("*", "*/*"):
        for folder in sorted(p for p in root.glob(level) if p.is_dir() and p.name != READERS_DIR):
            k = kind_of(folder)
            if k is not None and READERS_DIR not in folder.relative_to(root).parts:
                cases.append(Case(folder, k, root))
        if cases:
            break
    if not cases:
        raise InputError(f"{root} holds no result of vhi, knee-t2 or pain-cam (no vhi.json, knee_t2.json or pain.json "
                         f"in it or in its sub-folders): give a case output folder or a batch output folder.")
    return cases


def first_unreviewed(cases: List[Case], reader: str) -> int:
    for i, c in enumerate(cases):
        if not c.reviewed_by(reader):
            return i
    return 0
