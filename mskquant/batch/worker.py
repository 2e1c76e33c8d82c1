"""What runs on a Dask worker: one case through the single-case command's own code.

A worker is long-lived: the pipeline's imports, a headless Slicer scene with the module
logic, and the network (the models' own per-process caches) are set up once — by the
:class:`WarmUp` plugin when the worker starts, else by its first case — and reused; the scene
is cleared after every case. Each concurrent case takes its own logic from a small pool, so
cases never share a scene. A case writes, through the very function the single-case command
calls, into a staging folder beside its final folder; the batch moves it into place.
For ``knee-t2`` reading the next case's MESE series is a task of its own
(:func:`read_case`), which Dask runs on the worker's spare thread while a case computes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional

from distributed.diagnostics.plugin import WorkerPlugin

STAGING_PREFIX = ".staging-"
_POOL: Dict[str, List[object]] = {}
_LOCK = threading.Lock()
_PARSER = None
log = logging.getLogger("mskquant.batch")


def case_args(spec: dict, out: "str | Path"):
    """The argparse namespace of the single-case command for this case, writing into ``out``."""
    global _PARSER
    if _PARSER is None:
        from mskquant.cli import build_parser

        _PARSER = build_parser()
    return _PARSER.parse_args([spec["pipeline"], *spec["argv"], "--out", str(out), "-q"])


def make_logic(pipeline: str):
    if pipeline == "super-resolve":  # file in, file out on the numeric core: no scene; keeps the loaded model
        from KneeT2SegmentLib.superres.cli import SuperResolveWorker

        return SuperResolveWorker()
    from mskquant.headless import create_headless_runtime

    rt = create_headless_runtime()
    if pipeline in ("knee-t2", "knee-change", "knee-morph"):
        from KneeT2SegmentLib.logic import KneeT2Logic

        return KneeT2Logic(rt)
    if pipeline == "vhi":
        from VHIWorkflowLib.logic import VHILogic

        return VHILogic(rt)
    from SiamesePainCAMLib.logic import PainCAMLogic

    return PainCAMLogic(rt)


@contextmanager
def pooled_logic(pipeline: str):
    with _LOCK:
        free = _POOL.setdefault(pipeline, [])
        logic = free.pop() if free else None
    if logic is None:
        logic = make_logic(pipeline)
    try:
        yield logic
    finally:
        logic.rt.clear()  # the next case starts from an empty scene
        with _LOCK:
            _POOL[pipeline].append(logic)


def use_worker_threads() -> None:
    """Give torch, in this task's thread, the threads the worker was started with (``OMP_NUM_THREADS``).

    OpenMP keeps the thread count per calling thread, and a Dask worker's task threads do not
    see the environment's value (they start with 1): a network would run on one core.
    """
    from mskquant.device import omp_threads

    n = omp_threads()
    if n > 0:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def warm_up(pipeline: str, model: Optional[str] = None, device: str = "auto") -> None:
    """Imports, a logic with its scene and (``model`` given) the network, before the first case."""
    with pooled_logic(pipeline) as logic:
        if model is None:
            return
        from mskquant.progress import Progress

        if pipeline == "knee-t2":
            from KneeT2SegmentLib.parameters import KneeT2Parameters

            logic.segmentation_model(KneeT2Parameters(model_id=model, device=device).validate())
        elif pipeline == "pain-cam":
            from SiamesePainCAMLib.parameters import PainCAMParameters

            logic.model(PainCAMParameters(model_id=model, device=device).validate(), Progress())


class WarmUp(WorkerPlugin):
    """Sets a worker up for a pipeline when it starts (also a worker that replaces a dead one)."""

    name = "mskquant-warm-up"

    def __init__(self, pipeline: str, model: Optional[str] = None, device: str = "auto") -> None:
        self.pipeline, self.model, self.device = pipeline, model, device

    def setup(self, worker) -> None:
        try:
            warm_up(self.pipeline, self.model, self.device)
        except Exception:  # the first case reports the problem with the command's own message
            log.info("warm-up of %s failed", self.pipeline, exc_info=True)


def folder_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f"\0{f.relative_to(folder).as_posix()}\0".encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _error_text(exc: BaseException) -> str:
    from mskquant.errors import MSKQuantError

    if isinstance(exc, MSKQuantError):
        return str(exc)  # the single-case command's own message
    return f"unexpected {type(exc).__name__}: {exc} (a bug: please report it with this case)"


def hash_inputs(spec: dict) -> dict:
    """The case's input hash and the digests of its files (see :mod:`.digests`)."""
    from .digests import Recorder, input_hash

    recorder = Recorder()
    try:
        return {"input_sha256": input_hash(spec["argv"], spec.get("inputs", []), recorder),
                "digests": recorder.entries}
    except OSError:  # an unreadable folder: the case says why when it runs
        return {"input_sha256": "", "digests": []}


def read_case(spec: dict) -> dict:
    """Hash, read and check a knee-t2 case's inputs (the first step of the single-case command)."""
    from KneeT2SegmentLib.cli import read_knee_t2_inputs

    hashed = hash_inputs(spec)
    t0 = time.monotonic()
    try:
        inputs = read_knee_t2_inputs(case_args(spec, "unused"))
        return {"inputs": inputs, "read_s": time.monotonic() - t0, **hashed}
    except Exception as exc:
        log.debug("reading case %s failed", spec["case"], exc_info=True)
        return {"error": _error_text(exc), "read_s": time.monotonic() - t0, **hashed}


def _run(pipeline: str, args, read: Optional[dict], logic, timings: dict) -> None:
    t0 = time.monotonic()
    if pipeline == "knee-t2":
        from KneeT2SegmentLib.cli import knee_t2_into_folder, read_knee_t2_inputs

        if read is None:
            read = {"inputs": read_knee_t2_inputs(args), "read_s": time.monotonic() - t0}
        timings["read_s"] = read["read_s"]
        t1 = time.monotonic()
        result = knee_t2_into_folder(args, read["inputs"], logic)
        t = result.timings_s
        timings["network_s"] = t.get("segmentation", 0.0)
        timings["compute_s"] = t["total"] - timings["network_s"]
        timings["write_s"] = time.monotonic() - t1 - t["total"]
    elif pipeline == "knee-change":
        from KneeT2SegmentLib.cli import knee_change_into_folder

        knee_change_into_folder(args, logic)
    elif pipeline == "knee-morph":
        from KneeT2SegmentLib.morphometry.cli import knee_morph_into_folder, read_inputs

        result = knee_morph_into_folder(args, read_inputs(args))
        timings["network_s"] = result.timings_s.get("segmentation", 0.0)
    elif pipeline == "super-resolve":
        from mskquant.progress import Progress

        result = logic.run(args, Progress())
        timings["network_s"] = result.seconds["network_s"]
        timings["compute_s"] = result.seconds["total_s"] - result.seconds["network_s"]
    elif pipeline == "vhi":
        from VHIWorkflowLib.cli import vhi_into_folder
        from mskquant.progress import Progress

        vhi_into_folder(args, logic, Progress())
    else:
        from SiamesePainCAMLib.cli import pain_cam_into_folder
        from mskquant.progress import Progress

        pain_cam_into_folder(args, logic, Progress())
    if "compute_s" not in timings:
        timings["compute_s"] = time.monotonic() - t0


def run_case(spec: dict, read: Optional[dict] = None) -> dict:
    """One case into a staging folder in ``spec['cases_dir']``; returns its record (never raises
    for a failed case: the failure is the record)."""
    t0 = time.monotonic()
    staging = Path(spec["cases_dir"]) / f"{STAGING_PREFIX}{spec['case']}-{uuid.uuid4().hex[:8]}"
    rec = {"case": spec["case"], "worker": f"{socket.gethostname()}:{os.getpid()}", "staging": ""}
    timings: dict = {}
    rec.update({k: read[k] for k in ("input_sha256", "digests") if k in read} if read is not None else hash_inputs(spec))
    try:
        if read is not None and "error" in read:
            raise _ReadFailed(read["error"])
        args = case_args(spec, staging)
        use_worker_threads()
        with pooled_logic(spec["pipeline"]) as logic:
            _run(spec["pipeline"], args, read, logic, timings)
        rec.update(state="ok", output_sha256=folder_sha256(staging), staging=str(staging), error="")
    except _ReadFailed as exc:
        rec.update(state="failed", error=str(exc))
    except Exception as exc:
        log.debug("case %s failed", spec["case"], exc_info=True)
        rec.update(state="failed", error=_error_text(exc))
    if rec["state"] == "failed":
        shutil.rmtree(staging, ignore_errors=True)
    rec["seconds"] = time.monotonic() - t0 + (read or {}).get("read_s", 0.0)
    rec.update({k: v for k, v in timings.items()})
    if read is not None:
        rec["read_s"] = read.get("read_s", 0.0)
    rec["worker_peak_mb"] = peak_memory_mb()
    return rec


class _ReadFailed(Exception):
    pass


def peak_memory_mb() -> float:
    """This worker process's peak resident memory (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
