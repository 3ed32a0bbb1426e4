"""The project's one retry policy, on tenacity: a deadline, capped exponential backoff, optional jitter.

Every wait goes through `poll` (call a check until it answers yes) or `retry` (call until it stops
raising retryable errors). Both give up once `deadline_s` has passed on `clock`, never sleep past
it, and then hand back what the last attempt did: `poll` returns its last answer, `retry` raises
its last error, so each caller keeps its own messages. A `cancel` event (a shutdown) also ends
the wait: checked after each failed attempt and after each sleep, with no attempt after it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    Future,
    RetryCallState,
    Retrying,
    retry_base,
    retry_if_exception,
    retry_if_not_result,
    wait_exponential,
    wait_fixed,
)
from tenacity.wait import wait_base

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Waits of `first`, doubling up to `cap`; a fixed interval without a cap.

    With `jitter` each wait is drawn from the upper half of its step, so that the callers that
    failed together do not all retry at the same moment.
    """

    first: float
    cap: float | None = None
    jitter: bool = False


class _Cancelled(Exception):
    """Raised out of the sleep when `cancel` was set meanwhile: tenacity would attempt once more."""


def poll(
    check: Callable[[], T],
    backoff: Backoff,
    deadline_s: float | None = None,
    *,
    cancel: threading.Event | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call `check` until it answers truthy; its last answer on giving up. Errors are not retried."""
    return _run(check, retry_if_not_result(bool), backoff, deadline_s, cancel, None, sleep, clock)


def retry(
    call: Callable[[], T],
    backoff: Backoff,
    deadline_s: float | None = None,
    *,
    retryable: Callable[[BaseException], bool] = lambda error: isinstance(error, Exception),
    on_retry: Callable[[BaseException], None] | None = None,
    cancel: threading.Event | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call until it returns, retrying the `retryable` errors (`on_retry` sees each before its wait)."""
    return _run(call, retry_if_exception(retryable), backoff, deadline_s, cancel, on_retry, sleep, clock)


def _run(
    attempt: Callable[[], T],
    retry_on: retry_base,
    backoff: Backoff,
    deadline_s: float | None,
    cancel: threading.Event | None,
    on_retry: Callable[[BaseException], None] | None,
    sleep: Callable[[float], Any],
    clock: Callable[[], float],
) -> T:
    # tenacity measures time with time.monotonic itself; the deadline uses `clock` so tests can fake it.
    give_up = None if deadline_s is None else clock() + deadline_s
    step: wait_base = wait_fixed(backoff.first)
    if backoff.cap is not None:
        step = wait_exponential(multiplier=backoff.first, max=backoff.cap)
    last: list[Future] = []

    def wait(state: RetryCallState) -> float:
        seconds = step(state) * (random.uniform(0.5, 1.0) if backoff.jitter else 1.0)
        return seconds if give_up is None else min(seconds, max(0.0, give_up - clock()))

    def stop(state: RetryCallState) -> bool:
        return (give_up is not None and clock() >= give_up) or (cancel is not None and cancel.is_set())

    def before_sleep(state: RetryCallState) -> None:
        assert state.outcome is not None  # tenacity sleeps only after an attempt
        last[:] = [state.outcome]
        if on_retry is not None and state.outcome.failed:
            on_retry(state.outcome.exception())

    def nap(seconds: float) -> None:
        sleep(seconds)
        if cancel is not None and cancel.is_set():
            raise _Cancelled

    policy = Retrying(
        retry=retry_on, wait=wait, stop=stop, sleep=nap, before_sleep=before_sleep,
        retry_error_callback=lambda state: state.outcome.result(),  # the last answer, or its error
    )  # fmt: skip
    try:
        return policy(attempt)
    except _Cancelled:
        return last[0].result()
