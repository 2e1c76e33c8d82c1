"""What the batch prints: a progress bar on a terminal (cases done / failed / rate / ETA),
one plain line per finished case otherwise (:func:`mskquant.batchlauncher.progress_line`,
which the Slicer panels parse), and the closing lines."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from ..batchlauncher import progress_line


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class BatchReporter:
    def __init__(self, total: int, stream: Optional[TextIO] = None, tty: Optional[bool] = None,
                 quiet: bool = False) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.quiet = quiet
        self.done = 0
        self.failed = 0
        self.t0 = time.monotonic()
        self._bar = False

    def say(self, text: str) -> None:
        if self._bar:
            self.stream.write("\n")
            self._bar = False
        print(text, file=self.stream, flush=True)

    @property
    def rate_per_hour(self) -> Optional[float]:
        elapsed = time.monotonic() - self.t0
        return 3600.0 * self.done / elapsed if self.done and elapsed > 0 else None

    def eta(self) -> Optional[str]:
        rate = self.rate_per_hour
        return _clock((self.total - self.done) / rate * 3600.0) if rate else None

    def case_finished(self, case: str, state: str, seconds: float) -> None:
        self.done += 1
        self.failed += state == "failed"
        if self.quiet:
            return
        if not self.tty:
            print(progress_line(self.done, self.total, case, state, seconds, self.done, self.failed,
                                self.rate_per_hour, self.eta()), file=self.stream, flush=True)
            return
        if state == "failed":
            self.say(f"{case} failed (reason in status.csv)")
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        rate = self.rate_per_hour
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} done, "
                          f"{self.failed} failed, {rate or 0:.0f} cases/h, ETA {self.eta() or '?'}   ")
        self.stream.flush()
        self._bar = True

    def elapsed(self) -> str:
        return _clock(time.monotonic() - self.t0)
