"""Starting ``mskquant batch`` from a panel and reading its progress (no Slicer, no Dask).

The Slicer panels run a cohort in a separate process so Slicer stays responsive: they build
the command with :func:`batch_command`, start it with :class:`BatchProcess` and poll its
state from a timer; Cancel ends the process (SIGTERM: the batch stops its workers, records
the finished cases and exits; a second Cancel kills it). ``mskquant batch`` writes one plain
line per finished case when its output is not a terminal, in the format of
:func:`progress_line`, which :func:`parse_progress_line` reads back.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import List, Optional

PIPELINES = ("knee-t2", "knee-change", "vhi", "pain-cam")
_LINE = re.compile(r"^\[\s*(\d+)/(\d+)\] (\S+) (ok|failed|skipped) ([\d.]+) s \| done (\d+), failed (\d+)"
                   r"(?:, ([\d.]+) cases/h)?(?:, ETA (\S+))?")


def progress_line(index: int, total: int, case: str, state: str, seconds: float, done: int, failed: int,
                  rate_per_hour: Optional[float], eta: Optional[str]) -> str:
    """``[  3/20] knee_003 ok 4.2 s | done 3, failed 0, 2571.4 cases/h, ETA 0:00:07``."""
    width = len(str(total))
    text = f"[{index:>{width}}/{total}] {case} {state} {seconds:.1f} s | done {done}, failed {failed}"
    if rate_per_hour is not None:
        text += f", {rate_per_hour:.1f} cases/h"
    if eta is not None:
        text += f", ETA {eta}"
    return text


@dataclass
class BatchProgress:
    index: int
    total: int
    case: str
    state: str
    seconds: float
    done: int
    failed: int
    rate_per_hour: Optional[float] = None
    eta: Optional[str] = None

    @property
    def fraction(self) -> float:
        return self.index / max(self.total, 1)


def parse_progress_line(line: str) -> Optional[BatchProgress]:
    """The :class:`BatchProgress` of a per-case line, or None for any other line."""
    m = _LINE.match(line.strip())
    if not m:
        return None
    return BatchProgress(int(m.group(1)), int(m.group(2)), m.group(3), m.group(4), float(m.group(5)),
                         int(m.group(6)), int(m.group(7)), float(m.group(8)) if m.group(8) else None, m.group(9))


def batch_command(pipeline: str, manifest: str, out: str, workers: Optional[int] = None,
                  retry_failed: bool = False, force: bool = False, python: Optional[str] = None) -> List[str]:
    """The ``mskquant batch`` command line run with this Python (Slicer's own inside Slicer)."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}: one of {', '.join(PIPELINES)}")
    cmd = [python or sys.executable, "-m", "mskquant.cli", "batch", pipeline, "--manifest", str(manifest),
           "--out", str(out)]
    if workers:
        cmd += ["--workers", str(int(workers))]
    if retry_failed:
        cmd.append("--retry-failed")
    if force:
        cmd.append("--force")
    return cmd


def batch_environment(base: Optional[dict] = None) -> dict:
    """The environment for the batch process: PYTHONPATH names where this process found ``mskquant``
    and the modules' Lib packages (inside Slicer they come from the extension's module paths,
    which a child Python would not know)."""
    import importlib.util
    import os
    from pathlib import Path

    env = dict(os.environ if base is None else base)
    paths = []
    for name in ("mskquant", "KneeT2SegmentLib", "VHIWorkflowLib", "SiamesePainCAMLib"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            parent = str(Path(list(spec.submodule_search_locations)[0]).parent)
            if parent not in paths:
                paths.append(parent)
    old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    env["PYTHONPATH"] = os.pathsep.join(paths + old)
    return env


@dataclass
class BatchState:
    progress: Optional[BatchProgress] = None
    lines: List[str] = field(default_factory=list)
    returncode: Optional[int] = None


class BatchProcess:
    """``mskquant batch`` in a background process; :meth:`state` is safe to poll from a GUI timer."""

    def __init__(self, command: List[str], env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        self.command = list(command)
        self._state = BatchState()
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      bufsize=1, env=batch_environment() if env is None else env, cwd=cwd)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.rstrip("\n")
            parsed = parse_progress_line(line)
            with self._lock:
                self._state.lines.append(line)
                if parsed is not None:
                    self._state.progress = parsed
        rc = self._proc.wait()
        with self._lock:
            self._state.returncode = rc

    def state(self) -> BatchState:
        with self._lock:
            return BatchState(self._state.progress, list(self._state.lines), self._state.returncode)

    @property
    def running(self) -> bool:
        return self.state().returncode is None

    def cancel(self) -> None:
        """First call: SIGTERM (the batch records what finished and stops); later calls: kill."""
        if self._proc.poll() is not None:
            return
        if getattr(self, "_terminated", False):
            self._proc.kill()
        else:
            self._terminated = True
            self._proc.send_signal(signal.SIGTERM if hasattr(signal, "SIGTERM") else signal.SIGINT)

    def wait(self, timeout: Optional[float] = None) -> int:
        rc = self._proc.wait(timeout)
        self._reader.join(timeout)
        return rc
