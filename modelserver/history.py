"""The status page's charts, kept in the server: one point every EVERY_S over the last SPAN_S.

A sampler thread reads the server's counters (`Metrics.reading`) at a fixed period and keeps what
changed between two readings (`sample`, a pure function), so a page opened late still draws the
whole window and every page draws the same figures.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EVERY_S = 2.0  # the consumer lag is measured this often too (modelserver.loop.LAG_EVERY_S)
SPAN_S = 600.0


@dataclass(frozen=True)
class Reading:
    """The server's counters at one moment: totals since it started, except `latencies_s`."""

    at: float  # time.time(): where the point goes on the page's time axis
    clock: float  # time.monotonic(): the interval's length, unaffected by wall-clock steps
    requests: int
    replies: int
    dlq: Mapping[str, int]  # dead letters by kind
    predict: Mapping[str, tuple[float, int]]  # by instance: seconds spent in predict calls, calls
    lag: int | None
    latencies_s: Sequence[float]  # end to end, of the replies acknowledged since the previous reading


def sample(previous: Reading, current: Reading) -> dict[str, Any]:
    """One point: the rates and latencies of the interval between two readings, `current` later.

    Dead-letter kinds and instances appear only when they changed in the interval: an instance
    with no predict call has no latency to show, rather than a zero."""
    seconds = current.clock - previous.clock

    def per_second(now: int, before: int) -> float:
        return round((now - before) / seconds, 2)

    p50 = p99 = None
    if len(current.latencies_s):
        p50, p99 = (round(float(q) * 1000, 2) for q in np.percentile(current.latencies_s, [50, 99]))
    predict_ms = {}
    for instance, (total_s, calls) in current.predict.items():
        before_s, before_calls = previous.predict.get(instance, (0.0, 0))
        if calls > before_calls:
            predict_ms[instance] = round((total_s - before_s) / (calls - before_calls) * 1000, 2)
    return {
        "at": round(current.at, 3),
        "requests_per_s": per_second(current.requests, previous.requests),
        "replies_per_s": per_second(current.replies, previous.replies),
        "p50_ms": p50,
        "p99_ms": p99,
        "dlq_per_s": {
            kind: per_second(count, previous.dlq.get(kind, 0))
            for kind, count in current.dlq.items()
            if count > previous.dlq.get(kind, 0)
        },
        "lag": current.lag,
        "predict_ms": predict_ms,
    }


class History:
    """The newest SPAN_S of points; the sampler appends while HTTP requests read."""

    def __init__(self, every_s: float = EVERY_S, span_s: float = SPAN_S) -> None:
        self.every_s, self.span_s = every_s, span_s
        self._points: deque[dict[str, Any]] = deque(maxlen=int(span_s / every_s))
        self._lock = threading.Lock()

    def add(self, point: dict[str, Any]) -> None:
        with self._lock:
            self._points.append(point)

    def points(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every point kept, or only those after `since` (a point's `at`: a page's newest)."""
        with self._lock:
            points = list(self._points)
        return points if since is None else [point for point in points if point["at"] > since]


class Sampler(threading.Thread):
    """Adds a point to `history` every `history.every_s` until `stop` is set."""

    def __init__(self, read: Callable[[], Reading], history: History, stop: threading.Event) -> None:
        super().__init__(name="history", daemon=True)
        self.read, self.history, self.stop = read, history, stop

    def run(self) -> None:
        previous = self.read()
        while not self.stop.wait(self.history.every_s):
            current = self.read()
            self.history.add(sample(previous, current))
            previous = current
