"""``mskquant batch PIPELINE --manifest cohort.csv --out DIR``: a pipeline over a cohort.

Registered like the pipelines' own commands (argparse only here: Dask and the pipelines are
imported when the command runs). Exit code 0 when every case is ok, 1 when some failed or
were not run, 2 for a problem with the manifest or the options, 130 when cancelled.
"""

from __future__ import annotations

PIPELINE_NAMES = ("knee-t2", "knee-change", "knee-morph", "vhi", "pain-cam", "super-resolve")


def register(sub) -> None:
    p = sub.add_parser("batch", help="run a pipeline over a cohort (manifest CSV), resumable, on one machine or a "
                                     "Dask cluster")
    p.add_argument("pipeline", choices=PIPELINE_NAMES, help="the single-case command to run per case")
    p.add_argument("--manifest", required=True, help="CSV: a 'case' column plus the pipeline's options as columns "
                                                     "(paths relative to the manifest)")
    p.add_argument("--out", required=True, help="batch folder: cases/<case>/, status.csv, cohort.csv, summary.png")
    p.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per 2 cores, "
                                               "at most one per case)")
    p.add_argument("--threads-per-worker", type=int, default=1, help="cases each worker computes at once (1)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786 (default: "
                                       "DASK_SCHEDULER_ADDRESS, else a local cluster)")
    p.add_argument("--retry-failed", action="store_true", help="run the cases that failed before again")
    p.add_argument("--force", action="store_true", help="run every case again, done or not")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines (the closing lines remain)")
    p.set_defaults(handler=cmd_batch)


def cmd_batch(args) -> int:
    import sys

    from mskquant.progress import Cancelled

    from .runner import BatchRun

    run = BatchRun(args.pipeline, args.manifest, args.out, scheduler=args.scheduler, workers=args.workers,
                   threads_per_worker=args.threads_per_worker, retry_failed=args.retry_failed, force=args.force,
                   quiet=args.quiet)
    try:
        return run.run()
    except (KeyboardInterrupt, Cancelled):
        print(f"mskquant: batch cancelled: {len(run.ran)} case(s) finished in this run are recorded in "
              f"{run.out / 'status.csv'}; run the same command again to do the rest", file=sys.stderr)
        return 130
