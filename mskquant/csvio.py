"""CSV tables written atomically (numeric core: no Slicer import).

Floats are written with ``repr`` (round-trip exact) and NaN as an empty cell, the way the
MRML table adapters read them back.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import atomic_path


def csv_value(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else repr(float(v))
    return str(v)


def write_rows_csv(path: "str | os.PathLike", header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """Write ``header`` and ``rows`` to ``path``; the file appears complete or not at all."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for row in rows:
                w.writerow([csv_value(v) for v in row])
    return path
