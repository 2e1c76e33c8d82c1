"""Helpers the pipeline sub-commands share: progress on the terminal, JSON output, options."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..progress import Progress


class TerminalProgress:
    """Prints ``[ 42%] message`` lines on stderr when the message changes (quiet with -q)."""

    def __init__(self, quiet: bool = False, stream=None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._last = None
        self._t0 = time.monotonic()

    def __call__(self, fraction: float, message: str) -> None:
        if self.quiet:
            return
        key = message.split(" (")[0]
        if key != self._last:
            self._last = key
            print(f"[{fraction * 100:5.1f}%] {message}  ({time.monotonic() - self._t0:.1f} s)",
                  file=self.stream, flush=True)


def progress_for(args) -> Progress:
    return Progress(TerminalProgress(getattr(args, "quiet", False)))


def add_common_options(parser, out: bool = True) -> None:
    if out:
        parser.add_argument("--out", required=True, help="results folder (created if missing)")
        parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where networks run (default: CUDA if available; MSKQUANT_DEVICE overrides auto)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages")


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(data: Any, path: "str | os.PathLike") -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean(data), indent=2) + "\n", encoding="utf-8")
    return path
