"""The cohort manifest: one row per case, a ``case`` column plus the pipeline's own options.

A column named like an option of the single-case command (``mese``, ``te``, ``laterality``,
``normal_roi`` or ``normal-roi``...) is passed to it as ``--option value``; a yes/no option
(``whole_volume``) is given when the cell says 1, true or yes. Paths are relative to the
manifest. Any other column (subject, visit, group...) is only carried along into the cohort
table. Each case's input hash (:mod:`.digests`) lets a rerun tell a done case from a changed one.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import InputError
from .pipelines import Pipeline

# Options the batch sets itself (or that make no sense per case).
RESERVED = {"out", "overwrite", "quiet", "help"}
_SAFE_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_TRUE = {"1", "true", "yes", "y", "on"}


@dataclass
class Case:
    case: str
    row: Dict[str, str]  # the manifest row as written
    argv: List[str]  # the single-case command's options (without --out)
    inputs: List[Path] = field(default_factory=list)  # files/folders named by path columns
    input_sha256: str = ""  # see .digests.input_hash; computed where it is needed
    problem: Optional[str] = None  # a manifest problem of this row: the case fails with it


@dataclass
class Manifest:
    path: Path
    columns: List[str]  # manifest columns in order (``case`` first)
    passed: List[str]  # of them, those given to the pipeline
    carried: List[str]  # of them, those only carried along
    cases: List[Case]


def pipeline_options(subparser) -> Dict[str, Tuple[str, bool]]:
    """``dest -> (option string, takes_value)`` of a single-case command's argparse parser."""
    opts = {}
    for action in subparser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.dest in RESERVED:
            continue
        opts[action.dest] = (longs[0], action.nargs != 0)
    return opts


def _column_dest(column: str) -> str:
    return column.strip().lower().replace("-", "_")


def read_manifest(path: "str | Path", pipe: Pipeline, options: Dict[str, Tuple[str, bool]]) -> Manifest:
    path = Path(os.path.abspath(Path(path).expanduser()))  # workers may run elsewhere: absolute paths
    if not path.is_file():
        raise InputError(f"Manifest {path} does not exist: give a CSV with a 'case' column and one row per case.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = [c for c in (reader.fieldnames or [])]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a UTF-8 CSV file ({exc}): save the manifest as CSV (UTF-8).") from None
    if "case" not in columns:
        raise InputError(f"{path} has no 'case' column (it has {', '.join(columns) or 'no columns'}): add one with a "
                         f"unique id per case.")
    if not rows:
        raise InputError(f"{path} lists no cases: add one row per case.")
    dests = {c: _column_dest(c) for c in columns if c != "case"}
    passed = [c for c, d in dests.items() if d in options]
    carried = [c for c, d in dests.items() if d not in options]
    path_cols = [c for c in passed if dests[c] in pipe.path_options]
    seen: Dict[str, int] = {}
    cases = []
    for n, row in enumerate(rows, start=2):
        cid = (row.get("case") or "").strip()
        if not _SAFE_CASE.match(cid):
            raise InputError(f"Row {n} of {path}: case id {cid!r} cannot name a folder (use letters, digits and . _ + -, "
                             f"starting with a letter or digit): fix the manifest.")
        if cid in seen:
            raise InputError(f"Case '{cid}' appears twice in {path} (rows {seen[cid]} and {n}): case ids must be unique.")
        seen[cid] = n
        cases.append(_case(cid, row, passed, dests, path_cols, options, path.parent))
    return Manifest(path, columns, passed, carried, cases)


def _case(cid, row, passed, dests, path_cols, options, base: Path) -> Case:
    argv, inputs, problem = [], [], None
    for col in passed:
        value = (row.get(col) or "").strip()
        if value == "":
            continue  # an empty cell: the command's default
        flag, takes_value = options[dests[col]]
        if col in path_cols:
            p = Path(value).expanduser()
            p = p if p.is_absolute() else base / p
            # a registered model id is not a path: pass it as written when no such file exists
            if dests[col] == "model" and not p.exists() and not value.endswith(".pt"):
                argv += [flag, value]
                continue
            inputs.append(p)
            value = str(p)
        if not takes_value:
            if value.lower() in _TRUE:
                argv.append(flag)
            elif value.lower() not in {"0", "false", "no", "n", "off"}:
                problem = f"Column '{col}' of case '{cid}' is {value!r}: give yes or no (1/0, true/false)."
            continue
        argv += [flag, value]
    return Case(cid, {k: (v or "") for k, v in row.items() if k is not None}, argv, inputs, problem=problem)
