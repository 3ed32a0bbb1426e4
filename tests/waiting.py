"""The one way tests wait: poll a condition until it holds, or fail naming what never happened.

A fixed sleep is either too short on a busy machine (a flaky failure) or too long everywhere (a
slow suite), and a sleep before a "nothing more arrived" check proves nothing. Wait for a
condition instead; to show that nothing more arrives, send something after it and wait for that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Call `predicate` until it returns a truthy value and return that value.

    Raises AssertionError naming `what` after `timeout` seconds. The predicate is always called
    at least once, and once more at the deadline, so a slow predicate still gets its last look.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(max(0.0, min(every, deadline - time.monotonic())))
