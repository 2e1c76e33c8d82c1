"""``cohort.csv``: the cohort as one tidy table, one row per case x region / measure.

Each done case's own table (``subregions.csv``, ``change.csv``, ``vhi.csv`` or ``pain.csv``)
is copied verbatim, prefixed by the case id and the case's manifest columns as written, in
manifest order, so the numbers are exactly those of the case folders. A manifest column whose
name clashes with a column of the case table is carried as ``manifest_<name>``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Sequence, Tuple

from ..csvio import write_rows_csv_if_changed
from .manifest import Manifest
from .pipelines import Pipeline


def read_case_table(folder: Path, name: str) -> Tuple[List[str], List[List[str]]]:
    with open(folder / name, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return (rows[0], rows[1:]) if rows else ([], [])


def cohort_rows(manifest: Manifest, pipe: Pipeline, cases_dir: Path, done: Sequence[str]):
    """(header, rows) of the cohort table over the ``done`` cases."""
    done_set = set(done)
    extra = [c for c in manifest.columns if c != "case"]
    table_header: List[str] = []
    per_case = []
    for case in manifest.cases:
        if case.case not in done_set:
            continue
        header, rows = read_case_table(cases_dir / case.case, pipe.case_table)
        for col in header:
            if col not in table_header:
                table_header.append(col)
        per_case.append((case, header, rows))
    names = [f"manifest_{c}" if c in table_header or c == "case" else c for c in extra]
    out = []
    for case, header, rows in per_case:
        lead = [case.case] + [case.row.get(c, "") for c in extra]
        index = {c: i for i, c in enumerate(header)}
        for r in rows:
            out.append(lead + [r[index[c]] if c in index and index[c] < len(r) else "" for c in table_header])
    return ["case"] + names + table_header, out


def write_cohort(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> bool:
    """Write cohort.csv atomically unless it holds exactly this already; True if written."""
    return write_rows_csv_if_changed(path, header, rows)
