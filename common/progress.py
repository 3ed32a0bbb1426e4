"""Progress of a long CLI step: a live rich bar on a terminal, plain lines elsewhere.

Where the stream is not a terminal (logs, CI, pipes), a line is written when the step has
moved on by another `every_percent` of its total, or `every_s` seconds after the last line;
never a carriage return.
"""

from __future__ import annotations

import math
import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn


class ProgressLine:
    """`update` it as the step goes on; use it as a context manager so the bar is closed."""

    def __init__(
        self, title: str, stream: TextIO | None = None, every_percent: float = 10.0, every_s: float = 5.0
    ) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.every_percent = every_percent
        self.every_s = every_s
        self._last_line_at = -math.inf
        self._last_step = -1  # the every_percent step of the last plain line
        self._bar: Progress | None = None
        self._task = TaskID(0)
        if self.stream.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[detail]}"),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task(title, total=None, detail="")
            self._bar.start()

    def update(self, completed: float, detail: str, total: float | None = None) -> None:
        """`completed` of `total` (None: unknown, time-based lines only); `detail` is shown after it."""
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=total, detail=detail)
            return
        line = f"{self.title}: {detail}"
        step = self._last_step
        if total:
            percent = 100.0 * completed / total
            line += f" ({percent:5.1f}%)"
            step = int(percent // self.every_percent)
        now = time.monotonic()
        if step > self._last_step or now - self._last_line_at >= self.every_s:
            self._last_step, self._last_line_at = step, now
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
