"""Which serving instance answers: the routing state machine behind model switches.

A batch takes the current `Route` once and keeps it to the end, so a switch never splits a
batch and a batch in flight finishes on the old instance. A new route is installed only after
its instance reports the announced version AVAILABLE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from common.retry import Backoff, poll
from common.schemas import ModelRef, ModelUpdate
from modelserver.serving import ServingClient

log = logging.getLogger(__name__)

SWITCHES_KEPT = 100  # for the status page; a swap a minute is 100 minutes of them


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


SwitchKind = Literal["publish", "rollback"]


def switch_kind(old: ModelUpdate, new: ModelUpdate, seen: set[tuple[str, int]]) -> SwitchKind:
    """Whether a switch from `old` to `new` is a publish or a rollback.

    A model update does not say: `modelpublisher rollback` re-announces the previous record like
    any publish. But versions are epoch seconds bumped past every version under either instance
    (trainer.upload.next_version), so a freshly uploaded model always has a newer version than the
    one it replaces. A switch to an older version, or to an instance and version this server has
    routed to before (`seen`), brings an earlier model back: a rollback. The live model announced
    at a new address is neither, and counted as a publish.
    """
    target = (new.instance, new.version)
    earlier = target in seen and target != (old.instance, old.version)
    return "rollback" if new.version < old.version or earlier else "publish"


@dataclass(frozen=True)
class Switch:
    """One change of the live route: a row of the status page's switches and a chart marker."""

    at: float  # time.time() of the new route
    kind: SwitchKind
    old: ModelUpdate
    new: ModelUpdate

    def to_json(self) -> dict[str, Any]:
        def model(update: ModelUpdate) -> dict[str, Any]:
            return {
                "instance": update.instance,
                "version": update.version,
                "published_at": update.published_at,
                "metrics": update.metrics.model_dump(mode="json"),
            }

        return {"at": self.at, "kind": self.kind, "from": model(self.old), "to": model(self.new)}


class Router:
    """Holds the live route and the switches so far; thread-safe, read by the batch loop and the
    HTTP endpoints."""

    def __init__(self, retire_after_s: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._route: Route | None = None
        self._seen: set[tuple[str, int]] = set()
        self._history: deque[Switch] = deque(maxlen=SWITCHES_KEPT)
        self.switches = 0
        # The old client stays open this long: a batch in flight may still be using it.
        self.retire_after_s = retire_after_s

    @property
    def current(self) -> Route | None:
        with self._lock:
            return self._route

    @property
    def history(self) -> list[Switch]:
        """The newest SWITCHES_KEPT switches, oldest first."""
        with self._lock:
            return list(self._history)

    @property
    def previous(self) -> ModelUpdate | None:
        """The model the live one replaced."""
        with self._lock:
            return self._history[-1].old if self._history else None

    def install(self, route: Route) -> Route | None:
        target = (route.update.instance, route.update.version)
        with self._lock:
            old, self._route = self._route, route
            if old is not None:
                self.switches += 1
                kind = switch_kind(old.update, route.update, self._seen)
                self._history.append(Switch(route.since, kind, old.update, route.update))
            self._seen.add(target)
        if old is not None:
            timer = threading.Timer(self.retire_after_s, old.client.close)
            timer.daemon = True
            timer.start()
            log.info(
                "switched from %s v%d to %s v%d (%s)",
                old.update.instance,
                old.update.version,
                route.update.instance,
                route.update.version,
                kind,
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
