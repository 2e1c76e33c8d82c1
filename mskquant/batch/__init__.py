"""Cohort mode: any pipeline over a manifest of cases, resumable, on one machine or a Dask cluster.

``mskquant batch PIPELINE --manifest cohort.csv --out DIR`` from the shell (:mod:`.cli`), and
for notebooks::

    from mskquant import batch
    result = batch.run("knee-t2", "cohort.csv", "out", client=None)   # or client=Client("tcp://...")
    result.exit_code, result.status, result.cohort_csv

Layout: :mod:`.manifest` (rows -> cases, input hashes), :mod:`.status` (journal + status.csv),
:mod:`.worker` (a case on a Dask worker, through the single-case command's own functions),
:mod:`.cluster` (LocalCluster or an existing scheduler), :mod:`.runner` (one run),
:mod:`.cohort` (cohort.csv), :mod:`.summary` (summary.png), :mod:`.report` (progress lines).
Importing this package imports neither Dask nor the pipelines.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional


@dataclass
class BatchResult:
    exit_code: int
    out: Path
    status_csv: Path
    cohort_csv: Path
    summary_png: Path
    ran: List[str] = field(default_factory=list)  # cases run by this call

    @staticmethod
    def _rows(path: Path) -> List[Dict[str, str]]:
        if not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    @property
    def status(self) -> List[Dict[str, str]]:
        """status.csv as a list of dicts (case, state, seconds, error, checksums, timings)."""
        return self._rows(self.status_csv)

    @property
    def cohort(self) -> List[Dict[str, str]]:
        """cohort.csv as a list of dicts (one per case x region / measure)."""
        return self._rows(self.cohort_csv)


def run(pipeline: str, manifest, out, client=None, *, scheduler: Optional[str] = None, workers: Optional[int] = None,
        threads_per_worker: int = 1, retry_failed: bool = False, force: bool = False, quiet: bool = True,
        stream=None) -> BatchResult:
    """Run ``pipeline`` over the cases of ``manifest`` into ``out`` (see ``mskquant batch --help``).

    ``client``: a ``distributed.Client`` to run on (default: a LocalCluster for this call). A
    problem with the manifest or the options raises :class:`mskquant.errors.MSKQuantError`;
    failed cases do not raise: they are in ``result.status``.
    """
    from .runner import BatchRun

    r = BatchRun(pipeline, manifest, out, client=client, scheduler=scheduler, workers=workers,
                 threads_per_worker=threads_per_worker, retry_failed=retry_failed, force=force, stream=stream,
                 quiet=quiet)
    code = r.run()
    return BatchResult(code, r.out, r.out / "status.csv", r.out / "cohort.csv", r.out / "summary.png", list(r.ran))
