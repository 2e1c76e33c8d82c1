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


def rows_csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """The text :func:`write_rows_csv` writes."""
    import io

    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    for row in rows:
        w.writerow([csv_value(v) for v in row])
    return buf.getvalue()


def write_rows_csv_if_changed(path: "str | os.PathLike", header: Sequence[str], rows: Iterable[Sequence]) -> bool:
    """Like :func:`write_rows_csv`, but leave the file alone when it already holds exactly this; True if written."""
    path = Path(path)
    text = rows_csv_text(header, rows)
    try:
        if path.read_bytes() == text.encode("utf-8"):
            return False
    except OSError:
        pass
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return True


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
