"""``status.csv``: one row per case (ok | failed | skipped), kept safe against any interruption.

Every finished case is first appended to a journal (``.batch/journal.jsonl``, one flushed and
fsync'ed JSON line per case; a torn last line from a power cut is ignored) and only then counts
as done; ``status.csv`` is rewritten from it atomically (temporary file + rename) every few
seconds and at the end, so it is never half-written and lags the journal by seconds at most.
A rerun reads ``status.csv`` and then the journal (which is kept: the durable record).
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from ..csvio import write_rows_csv, write_rows_csv_if_changed

COLUMNS = ("case", "state", "seconds", "error", "output_sha256", "input_sha256", "read_s", "network_s", "compute_s",
           "write_s", "worker", "worker_peak_mb", "finished_utc")
STATES = ("ok", "failed", "skipped")


class StatusBook:
    """The state of every case of a batch folder."""

    def __init__(self, out: Path, min_interval_s: float = 2.0) -> None:
        self.out = Path(out)
        self.path = self.out / "status.csv"
        self.journal = self.out / ".batch" / "journal.jsonl"
        self.records: Dict[str, dict] = {}
        self.min_interval_s = min_interval_s
        self._written = 0.0
        self._fh = None
        self._load()

    def _load(self) -> None:
        if self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    if row.get("case") and row.get("state") in STATES:
                        self.records[row["case"]] = dict(row)
        if self.journal.is_file():
            with open(self.journal, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line torn by a power cut: that case was not done
                    if isinstance(rec, dict) and rec.get("case") and rec.get("state") in STATES:
                        self.records[rec["case"]] = {k: rec.get(k, "") for k in COLUMNS}

    def get(self, case: str) -> Optional[dict]:
        return self.records.get(case)

    def record(self, rec: dict) -> None:
        """Make a finished case durable (journal), then refresh ``status.csv`` when due."""
        rec = {k: ("" if rec.get(k) is None else rec.get(k)) for k in COLUMNS}
        if not rec["finished_utc"]:
            rec["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self._fh is None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.journal, "a", encoding="utf-8")
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records[rec["case"]] = rec
        if time.monotonic() - self._written >= self.min_interval_s:
            self.write()

    def _rows(self):
        names = getattr(self, "order", None) or list(self.records)
        return [[self.records[c].get(k, "") for k in COLUMNS] for c in names if c in self.records]

    def write(self, order: Optional[Iterable[str]] = None) -> bool:
        """status.csv from the records (in ``order`` when given: the manifest's; others dropped);
        with ``order`` the file is left alone when it holds exactly this already. True if written."""
        self._written = time.monotonic()
        if order is not None:
            self.order = [c for c in order]
            return write_rows_csv_if_changed(self.path, COLUMNS, self._rows())
        write_rows_csv(self.path, COLUMNS, self._rows())
        return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def counts(self, cases: Iterable[str]) -> Dict[str, int]:
        out = {s: 0 for s in STATES}
        for c in cases:
            r = self.records.get(c)
            if r is not None:
                out[r["state"]] += 1
        return out

    def failed(self, cases: Iterable[str]) -> List[str]:
        return [c for c in cases if (self.records.get(c) or {}).get("state") == "failed"]
