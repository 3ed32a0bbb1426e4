"""Prometheus metrics (own registry), the rolling figures behind `GET /state` and the readings
behind `GET /history`."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from modelserver.history import Reading

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# End-to-end latencies kept between two history readings: ample for 2 s at 10,000 replies/s, and
# a bound should nothing read them.
FRESH_LATENCIES = 20_000


class Metrics:
    def __init__(self, recent: int = 20, window: int = 2000) -> None:
        self.recent = recent
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("recommender_requests", "Request messages consumed.", registry=r)
        self.replies = Counter(
            "recommender_replies", "Replies produced and acknowledged.", ["instance"], registry=r
        )
        self.dlq = Counter("recommender_dlq", "Requests sent to the dead-letter topic.", ["kind"], registry=r)
        self.batch_size = Histogram(
            "recommender_batch_size", "Requests per batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.predict_latency = Histogram(
            "recommender_predict_latency_seconds",
            "Duration of one predict call, retries included.",
            ["signature"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "recommender_request_latency_seconds",
            "From the request's sent_at to its reply being acknowledged.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter("recommender_serving_retries", "Predict calls retried.", registry=r)
        self.produce_failures = Counter(
            "recommender_produce_failures",
            "Records Kafka did not take: refused (replaced by a dead letter) or failed (batch re-read).",
            ["outcome"],
            registry=r,
        )
        self.rejected_updates = Counter(
            "recommender_model_updates_rejected",
            "Model updates ignored: malformed, oversized, or naming an instance that does not answer.",
            ["reason"],
            registry=r,
        )
        self.switches = Counter("recommender_model_switches", "Switches to a new model.", registry=r)
        self.ready = Gauge("recommender_ready", "1 when a model is known.", registry=r)
        # The version as the value, not as a label: one line over time that steps at each switch
        # (up on a publish, down on a rollback), where a `version` label would start a new series
        # of constant 1s at every publish. `instance` (a or b, two values) colours the line by the
        # instance serving it; only the live instance has a series, none before the first model.
        self.live_model = Gauge(
            "recommender_live_model_version",
            "Version of the live model, by the instance serving it; absent while no model is known.",
            ["instance"],
            registry=r,
        )
        self.lag = Gauge(
            "recommender_consumer_lag",
            "Messages behind the end of the requests topic, by assigned partition.",
            ["partition"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self.counts = {"requests": 0, "replies": 0, "dlq": 0, "batches": 0}
        self.consumer_lag: int | None = None  # the sum over the assigned partitions
        self._lag_by_partition: dict[int, int] = {}
        self._live_instance: str | None = None
        # For the history: what the Prometheus metrics hold but not by kind or by instance.
        self._fresh_latencies: deque[float] = deque(maxlen=FRESH_LATENCIES)
        self._dlq_by_kind: dict[str, int] = {}
        self._predict_by_instance: dict[str, tuple[float, int]] = {}

    def observe_batch(self, size: int) -> None:
        self.requests.inc(size)
        self.batch_size.observe(size)
        with self._lock:
            self.counts["requests"] += size
            self.counts["batches"] += 1

    def observe_replies(
        self, instance: str, latencies_s: list[float], summaries: list[dict[str, Any]]
    ) -> None:
        """One batch's acknowledged replies from one instance: counted and timed all at once, since
        per-reply bookkeeping was a visible share of the loop's CPU. Only the newest `recent`
        summaries are kept, so callers need not build more."""
        self.replies.labels(instance).inc(len(latencies_s))
        valid = [latency for latency in latencies_s if latency >= 0]  # a skewed sender clock
        for latency in valid:
            self.request_latency.observe(latency)
        with self._lock:
            self.counts["replies"] += len(latencies_s)
            self._latencies.extend(valid)
            self._fresh_latencies.extend(valid)
            self._recent.extend(summaries)

    def observe_dead_letter(self, kind: str, summary: dict[str, Any]) -> None:
        self.dlq.labels(kind).inc()
        with self._lock:
            self.counts["dlq"] += 1
            self._dlq_by_kind[kind] = self._dlq_by_kind.get(kind, 0) + 1
            self._recent.append(summary)

    def observe_predict(self, instance: str, signature: str, seconds: float) -> None:
        """One predict call; the Prometheus histogram is by signature, the history by instance."""
        self.predict_latency.labels(signature).observe(seconds)
        with self._lock:
            total, calls = self._predict_by_instance.get(instance, (0.0, 0))
            self._predict_by_instance[instance] = (total + seconds, calls + 1)

    def set_live_model(self, instance: str, version: int) -> None:
        """The live model changed (or the first one is known): only its instance keeps a series."""
        with self._lock:
            old, self._live_instance = self._live_instance, instance
            # The new series before the old one goes, so no scrape finds no live model.
            self.live_model.labels(instance).set(version)
            if old is not None and old != instance:
                self.live_model.remove(old)

    def set_lag(self, lags: Mapping[int, int] | None) -> None:
        """Each assigned partition's lag (None while nothing is assigned). A partition left out
        loses its series, so a replica stops reporting the partitions a rebalance took away."""
        with self._lock:
            current = dict(lags or {})
            for partition in self._lag_by_partition.keys() - current.keys():
                self.lag.remove(str(partition))
            for partition, lag in current.items():
                self.lag.labels(str(partition)).set(lag)
            self._lag_by_partition = current
            self.consumer_lag = None if lags is None else sum(current.values())

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Revoked or lost partitions: their series go at once rather than at the next measurement."""
        with self._lock:
            gone = set(partitions) & self._lag_by_partition.keys()
            for partition in gone:
                self.lag.remove(str(partition))
                del self._lag_by_partition[partition]
            if gone:
                remaining = self._lag_by_partition.values()
                self.consumer_lag = sum(remaining) if remaining else None

    def snapshot(self) -> dict[str, Any]:
        """Counts, latency percentiles (ms) over the recent window, and the last few requests."""
        with self._lock:
            latencies = np.array(self._latencies)
            counts, recent = dict(self.counts), list(self._recent)
        percentiles = (
            {f"p{q}": round(float(np.percentile(latencies, q)) * 1000, 2) for q in (50, 95, 99)}
            if len(latencies)
            else {"p50": None, "p95": None, "p99": None}
        )
        return {
            "counts": counts,
            "latency_ms": percentiles | {"window": len(latencies)},
            "consumer_lag": self.consumer_lag,
            "recent": recent,
            "at": time.time(),
        }

    def reading(self) -> Reading:
        """The counters now, taking the end-to-end latencies observed since the previous reading."""
        with self._lock:
            fresh = list(self._fresh_latencies)
            self._fresh_latencies.clear()
            return Reading(
                at=time.time(),
                clock=time.monotonic(),
                requests=self.counts["requests"],
                replies=self.counts["replies"],
                dlq=dict(self._dlq_by_kind),
                predict=dict(self._predict_by_instance),
                lag=self.consumer_lag,
                latencies_s=fresh,
            )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
