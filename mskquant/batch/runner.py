"""One batch run: decide which cases to run, run them on Dask, record, tabulate, summarise.

Safety against interruption comes from the order of things: a case is computed into a staging
folder, moved into ``cases/<case>/`` with a rename, and only then journalled as done (see
:mod:`.status`); ``status.csv``, ``cohort.csv`` and ``summary.png`` are replaced atomically. A
kill at any moment therefore loses at most the cases in flight; their staging folders are
removed by the next run (which holds the output folder's lock, so they cannot be anyone's).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import threading
import uuid
from pathlib import Path
from typing import List, Optional

from ..errors import InputError
from ..outputlock import FolderLock
from .cohort import cohort_rows, write_cohort
from .digests import DigestCache, input_hash
from .manifest import Case, pipeline_options, read_manifest
from .pipelines import case_outputs, pipeline
from .report import BatchReporter
from .status import StatusBook
from .summary import write_summary

STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".replaced-"


def subcommand_parser(name: str):
    from mskquant.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, sub.choices[name]


def argv_problem(parser, name: str, argv: List[str]) -> Optional[str]:
    """The single-case command's own complaint about these options, if any."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args([name, *argv, "--out", "x"])
    except SystemExit:
        text = err.getvalue().strip().splitlines()
        return (text[-1] if text else "invalid options").replace("mskquant: error: ", "")
    return None


class BatchRun:
    def __init__(self, pipeline_name: str, manifest, out, *, client=None, scheduler: Optional[str] = None,
                 workers: Optional[int] = None, threads_per_worker: int = 1, retry_failed: bool = False,
                 force: bool = False, stream=None, tty: Optional[bool] = None, quiet: bool = False) -> None:
        self.pipe = pipeline(pipeline_name)
        self.parser, sub = subcommand_parser(pipeline_name)
        self.manifest = read_manifest(manifest, self.pipe, pipeline_options(sub))
        self.out = Path(out).expanduser().resolve()
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"Output path {self.out} is a file: give a folder for the batch results.")
        self.cases_dir = self.out / "cases"
        self.options = dict(client=client, scheduler=scheduler, workers=workers, threads_per_worker=threads_per_worker)
        self.retry_failed, self.force = retry_failed, force
        self.stream, self.tty, self.quiet = stream, tty, quiet
        self.ran: List[str] = []

    # --- which cases ---------------------------------------------------------------------------
    def _done(self, case: Case, rec: dict) -> bool:
        folder = self.cases_dir / case.case
        return folder.is_dir() and all((folder / n).is_file() for n in case_outputs(self.pipe.name))

    def _hash(self, case: Case) -> str:
        if not case.input_sha256:
            case.input_sha256 = input_hash(case.argv, case.inputs, self.digests.digest)
        return case.input_sha256

    def plan(self, book: StatusBook) -> List[Case]:
        """The cases to run; a case never run before is hashed by its worker, not here."""
        todo = []
        for case in self.manifest.cases:
            rec = book.get(case.case)
            same = rec is not None and not self.force and rec.get("input_sha256") == self._hash(case)
            if self.force or not same:
                todo.append(case)
            elif rec["state"] == "ok" and not self._done(case, rec):
                todo.append(case)  # its folder was removed or emptied since
            elif rec["state"] == "failed" and self.retry_failed:
                todo.append(case)
            elif rec["state"] == "skipped":
                todo.append(case)
        return todo

    # --- the run ---------------------------------------------------------------------------------
    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(self.out)
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> int:
        self.cases_dir.mkdir(exist_ok=True)
        self._remove_leftovers()
        book = StatusBook(self.out)
        self.digests = DigestCache(self.out / ".batch" / "digests.json")
        names = [c.case for c in self.manifest.cases]
        book.order = names
        todo = self.plan(book)
        report = BatchReporter(len(todo), self.stream, self.tty, self.quiet)
        if self.manifest.carried:
            report.say(f"carried along only (not options of '{self.pipe.name}'): {', '.join(self.manifest.carried)}")
        if not todo:
            counts = book.counts(names)
            report.say(f"nothing to do: all {len(names)} cases are done ({counts['ok']} ok, {counts['failed']} failed; "
                       f"--retry-failed reruns the failed ones, --force every case)")
            self._finish(book, names)
            return self._closing(book, names, report)
        report.say(f"{self.pipe.name}: {len(todo)} of {len(names)} cases to run -> {self.out}")
        runnable = []
        for case in todo:
            problem = case.problem or argv_problem(self.parser, self.pipe.name, case.argv)
            if problem:
                self._record(book, case, {"case": case.case, "state": "failed", "error": problem, "seconds": 0.0},
                             report)
            else:
                runnable.append(case)
        try:
            if runnable:
                self._execute(runnable, book, report)
        except BaseException:
            self._mark_not_run(book, todo)
            self._finish(book, names)
            raise
        self._finish(book, names)
        return self._closing(book, names, report)

    def _execute(self, cases: List[Case], book: StatusBook, report: BatchReporter) -> None:
        from distributed import as_completed

        from .cluster import CASE_RESOURCE, open_cluster
        from .worker import WarmUp, read_case, run_case

        cluster = open_cluster(n_cases=len(cases), **self.options)
        restore = _sigterm_as_interrupt()
        try:
            client = cluster.client
            model = self._warm_model(cases)
            client.register_plugin(WarmUp(self.pipe.name, model, os.environ.get("MSKQUANT_DEVICE", "auto")))
            split = cluster.split_reads and self.pipe.name == "knee-t2"
            resources = {CASE_RESOURCE: 1} if cluster.split_reads else None
            pending = list(reversed(cases))
            by_future = {}
            queue = as_completed()

            def submit(case: Case) -> None:
                spec = {"pipeline": self.pipe.name, "case": case.case, "argv": case.argv,
                        "inputs": [str(p) for p in case.inputs], "cases_dir": str(self.cases_dir)}
                tag = f"{case.case}-{uuid.uuid4().hex[:8]}"
                read = client.submit(read_case, spec, key=f"mskquant-read-{tag}", pure=False) if split else None
                fut = client.submit(run_case, spec, read, key=f"mskquant-case-{tag}", pure=False, resources=resources)
                by_future[fut.key] = case
                queue.add(fut)

            for _ in range(min(len(pending), 2 * cluster.slots)):
                submit(pending.pop())
            for fut in queue:
                case = by_future.pop(fut.key)
                rec = self._result(fut, case)
                fut.release()
                if rec.get("state") == "ok":
                    self._install(Path(rec.pop("staging")), self.cases_dir / case.case)
                self._record(book, case, rec, report)
                if pending:
                    submit(pending.pop())
        finally:
            restore()
            cluster.close()

    def _warm_model(self, cases: List[Case]) -> Optional[str]:
        if self.pipe.model_unless is None:
            return None
        needs = [c for c in cases if not (self.pipe.model_unless and (c.row.get(self.pipe.model_unless) or "").strip())]
        if not needs:
            return None
        ns = self.parser.parse_args([self.pipe.name, *needs[0].argv, "--out", "x"])
        return getattr(ns, "model", None)

    @staticmethod
    def _result(fut, case: Case) -> dict:
        try:
            return fut.result()
        except Exception as exc:  # KilledWorker: the case took down its worker again and again
            return {"case": case.case, "state": "failed", "seconds": 0.0,
                    "error": f"the worker process died while running this case, on every try ({type(exc).__name__}: "
                             f"{exc}): out of memory or a crash; run it alone with the single-case command to see why"}

    def _record(self, book: StatusBook, case: Case, rec: dict, report: BatchReporter) -> None:
        rec = dict(rec)
        self.digests.add(rec.pop("digests", None))
        rec["input_sha256"] = rec.get("input_sha256") or self._hash(case)
        for k in ("seconds", "read_s", "network_s", "compute_s", "write_s", "worker_peak_mb"):
            if isinstance(rec.get(k), float):
                rec[k] = f"{rec[k]:.3f}" if k != "worker_peak_mb" else f"{rec[k]:.0f}"
        book.record(rec)
        self.ran.append(case.case)
        report.case_finished(case.case, rec["state"], float(rec.get("seconds") or 0.0))

    def _install(self, staging: Path, final: Path) -> None:
        """Move a finished case folder into place (replacing an older one) with renames only."""
        trash = None
        if final.exists():
            trash = final.with_name(f"{TRASH_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
            os.rename(final, trash)
        os.rename(staging, final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        for p in self.cases_dir.iterdir():
            if p.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(p, ignore_errors=True)

    def _mark_not_run(self, book: StatusBook, todo: List[Case]) -> None:
        for case in todo:
            if case.case not in self.ran and book.get(case.case) is None:
                book.record({"case": case.case, "state": "skipped", "input_sha256": case.input_sha256,
                             "error": "not run: the batch was stopped before this case"})

    def _finish(self, book: StatusBook, names: List[str]) -> None:
        """status.csv, cohort.csv and summary.png, each replaced only when its content changed."""
        with contextlib.suppress(OSError):
            self._remove_leftovers()
        book.write(names)
        book.close()
        self.digests.save()
        ok = [c for c in names if (book.get(c) or {}).get("state") == "ok"]
        header, rows = cohort_rows(self.manifest, self.pipe, self.cases_dir, ok)
        summary = self.out / "summary.png"
        if write_cohort(self.out / "cohort.csv", header, rows) or not summary.is_file():
            write_summary(self.pipe, header, rows, summary)

    def _closing(self, book: StatusBook, names: List[str], report: BatchReporter) -> int:
        counts = book.counts(names)
        not_run = len(names) - counts["ok"] - counts["failed"]
        report.say(f"{len(names)} cases: {counts['ok']} ok, {counts['failed']} failed"
                   + (f", {not_run} not run" if not_run else "")
                   + (f"; {len(self.ran)} run now in {report.elapsed()}" if self.ran else ""))
        report.say(f"cohort table {self.out / 'cohort.csv'}; summary picture {self.out / 'summary.png'}")
        if counts["failed"]:
            failed = book.failed(names)
            shown = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
            report.say(f"{counts['failed']} case(s) failed ({shown}): the reasons are in {book.path} (column 'error')")
        return 0 if counts["ok"] == len(names) else 1


def _sigterm_as_interrupt():
    """SIGTERM stops the batch like Ctrl-C (the finished cases stay recorded); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)
