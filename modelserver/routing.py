"""Which serving instance answers: the routing state machine behind model switches.

A batch takes the current `Route` once and keeps it to the end, so a switch never splits a
batch and a batch in flight finishes on the old instance. A new route is installed only after
its instance reports the announced version AVAILABLE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.retry import Backoff, poll
from common.schemas import ModelRef, ModelUpdate
from modelserver.serving import ServingClient

log = logging.getLogger(__name__)


@dataclass
class Route:
    update: ModelUpdate
    client: ServingClient
    since: float = field(default_factory=time.time)

    @property
    def model(self) -> ModelRef:
        return ModelRef(name=self.update.model, instance=self.update.instance, version=self.update.version)

    def same_target(self, update: ModelUpdate) -> bool:
        own = self.update
        return (own.instance, own.version, own.url, own.grpc) == (
            update.instance,
            update.version,
            update.url,
            update.grpc,
        )


class Router:
    """Holds the live route; thread-safe, read by the batch loop and the HTTP endpoints."""

    def __init__(self, retire_after_s: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._route: Route | None = None
        self.switches = 0
        # The old client stays open this long: a batch in flight may still be using it.
        self.retire_after_s = retire_after_s

    @property
    def current(self) -> Route | None:
        with self._lock:
            return self._route

    def install(self, route: Route) -> Route | None:
        with self._lock:
            old, self._route = self._route, route
            if old is not None:
                self.switches += 1
        if old is not None:
            timer = threading.Timer(self.retire_after_s, old.client.close)
            timer.daemon = True
            timer.start()
            log.info(
                "switched from %s v%d to %s v%d",
                old.update.instance,
                old.update.version,
                route.update.instance,
                route.update.version,
            )
        else:
            log.info(
                "serving model %s v%d on instance %s",
                route.update.model,
                route.update.version,
                route.update.instance,
            )
        return old


def check_answers(
    client: ServingClient,
    deadline_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
) -> bool:
    """Poll the instance until it reports the version AVAILABLE, with backoff, within the deadline."""
    return poll(client.available, Backoff(0.1, cap=2.0), deadline_s, cancel=stop, sleep=sleep, clock=clock)
