"""Where long work inside a detector shows its progress: the run's rich Progress, while the runner lends it.

The runner lends its display around `fit` (`reporting_to`); the trainer keeps one bar per fit on it
(`Bar`), so every family's training shows in the run's display without knowing about it. Outside a
run (a library call, a rank other than 0) there is no display and a Bar does nothing.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

_display: ContextVar = ContextVar("avbench_progress", default=None)


@contextlib.contextmanager
def reporting_to(progress):
    """Bars made while this lasts go to `progress` (a rich.progress.Progress, or None: nowhere)."""
    token = _display.set(progress)
    try:
        yield
    finally:
        _display.reset(token)


class Bar:
    """A task on the lent display: `advance` it, `describe` it anew, `close` it when done."""

    def __init__(self, description: str, total: float | None = None):
        self.progress = _display.get()
        self.total = total
        self.task = self.progress.add_task(description, total=total) if self.progress is not None else None

    def set_total(self, total: float) -> None:
        """The amount of work, once known (e.g. after the first epoch's batches are drawn)."""
        self.total = total
        if self.task is not None:
            self.progress.update(self.task, total=total)

    def advance(self, n: float = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def describe(self, description: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=description)

    def close(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
