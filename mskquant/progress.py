"""The progress-callback and cancel-token protocol used by every long-running step.

A step receives a :class:`Progress` and calls it with the fraction done (0..1) and a short
message. Each call also checks the :class:`CancelToken` and raises :class:`Cancelled` when
the user has asked to stop, so cancelling never needs extra code in the step. Nested steps
get a sub-range with :meth:`Progress.sub`, so a pipeline's overall bar moves smoothly.

The Slicer panels pass a callback that updates the progress bar and processes GUI events
(so the Cancel button is seen); the CLI prints a line per message; tests record the calls.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
ProgressCallback = Callable[[float, str], None]


class Cancelled(Exception):
    """Raised inside a step when its cancel token has been set."""


class CancelToken:
    """Thread-safe flag that a GUI (or a signal handler) sets to stop a running step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class Progress:
    """Reports progress into ``[start, end]`` of the caller's callback and checks for cancel."""

    def __init__(
        self,
        callback: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
        start: float = 0.0,
        end: float = 1.0,
    ) -> None:
        self.callback = callback
        self.cancel_token = cancel if cancel is not None else CancelToken()
        self.start = float(start)
        self.end = float(end)

    def __call__(self, fraction: float, message: str = "") -> None:
        self.cancel_token.raise_if_cancelled()
        if self.callback is not None:
            f = min(max(float(fraction), 0.0), 1.0)
            self.callback(self.start + (self.end - self.start) * f, message)

    def check(self) -> None:
        """Only check for cancellation (for tight loops that report elsewhere)."""
        self.cancel_token.raise_if_cancelled()

    def sub(self, start: float, end: float) -> "Progress":
        """A progress for a sub-step that covers ``[start, end]`` of this step."""
        span = self.end - self.start
        return Progress(self.callback, self.cancel_token, self.start + span * start, self.start + span * end)

    def iterate(self, items: Iterable[T], message: str, total: Optional[int] = None) -> Iterator[T]:
        """Yield items, reporting ``message (i/n)`` before each and 1.0 at the end."""
        items = list(items) if total is None else items
        n = total if total is not None else len(items)  # type: ignore[arg-type]
        for i, item in enumerate(items):
            self(i / max(n, 1), f"{message} ({i + 1}/{n})")
            yield item
        self(1.0, message)


def as_progress(progress: "Progress | ProgressCallback | None", cancel: Optional[CancelToken] = None) -> Progress:
    """Accept a Progress, a bare callback or None wherever a step takes ``progress``."""
    if isinstance(progress, Progress):
        return progress
    return Progress(progress, cancel)
