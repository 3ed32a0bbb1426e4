"""The status page's history: sampling, the bounded window, switches told apart, GET /history (no broker)."""

from __future__ import annotations

import threading

import httpx
import pytest

from common.schemas import ModelMetrics, ModelUpdate
from modelserver.history import History, Reading, Sampler, sample
from modelserver.http import HttpServer, build_app
from modelserver.metrics import Metrics
from modelserver.routing import Route, Router, switch_kind
from tests.modelserver.test_routing import StatusOnly, update
from tests.waiting import wait_until


def reading(clock: float, **figures) -> Reading:
    defaults = {"requests": 0, "replies": 0, "dlq": {}, "predict": {}, "lag": None, "latencies_s": []}
    return Reading(at=1_795_000_000 + clock, clock=clock, **(defaults | figures))


def test_a_point_is_the_rates_and_latencies_of_the_interval_between_two_readings():
    before = reading(10.0, requests=100, replies=90, dlq={"not-json": 3}, predict={"a": (1.0, 50)}, lag=7)
    after = reading(
        12.0,
        requests=180,
        replies=170,
        dlq={"not-json": 3, "too-large": 4},
        predict={"a": (1.6, 60), "b": (0.1, 5)},
        lag=2,
        latencies_s=[i / 1000 for i in range(1, 101)],  # 1..100 ms
    )
    assert sample(before, after) == {
        "at": 1_795_000_012.0,
        "requests_per_s": 40.0,
        "replies_per_s": 40.0,
        "p50_ms": 50.5,
        "p99_ms": 99.01,
        # Only the kinds that grew in the interval, per second.
        "dlq_per_s": {"too-large": 2.0},
        # The mean predict call of each instance called in the interval: a's 10 calls took 0.6 s.
        "predict_ms": {"a": 60.0, "b": 20.0},
        "lag": 2,
    }


def test_an_idle_interval_has_zero_rates_and_no_latency_rather_than_stale_figures():
    busy = reading(0.0, requests=5, replies=5, predict={"a": (0.05, 1)})
    point = sample(busy, reading(2.0, requests=5, replies=5, predict={"a": (0.05, 1)}))
    assert point["requests_per_s"] == point["replies_per_s"] == 0
    assert point["p50_ms"] is None and point["p99_ms"] is None
    assert point["predict_ms"] == {} and point["dlq_per_s"] == {} and point["lag"] is None


def test_metrics_readings_total_the_counters_and_hand_each_latency_over_once():
    metrics = Metrics()
    metrics.observe_batch(3)
    metrics.observe_replies("a", [0.02, 0.04, -1.0], [])  # a skewed sender clock gives no latency
    metrics.observe_dead_letter("not-json", {})
    metrics.observe_dead_letter("not-json", {})
    metrics.observe_predict("a", "recommend", 0.01)
    metrics.observe_predict("a", "serving_default", 0.03)
    metrics.set_lag({0: 1, 1: 3})  # by partition; the reading has the sum
    first = metrics.reading()
    assert (first.requests, first.replies, first.lag) == (3, 3, 4)
    assert first.dlq == {"not-json": 2}
    assert first.predict["a"] == (pytest.approx(0.04), 2)
    assert first.latencies_s == [0.02, 0.04]
    second = metrics.reading()
    assert second.latencies_s == [] and second.replies == 3 and second.clock >= first.clock
    # The Prometheus histogram still counts the calls by signature.
    assert (
        b'recommender_predict_latency_seconds_count{signature="serving_default"} 1.0' in metrics.exposition()
    )


def test_the_history_keeps_the_last_span_and_returns_the_points_after_a_given_one():
    history = History(every_s=2.0, span_s=10.0)
    for second in range(0, 20, 2):
        history.add({"at": float(second)})
    assert [p["at"] for p in history.points()] == [10.0, 12.0, 14.0, 16.0, 18.0]
    assert [p["at"] for p in history.points(since=14.0)] == [16.0, 18.0]
    assert history.points(since=18.0) == []


def test_the_sampler_adds_a_point_each_period_until_stopped():
    metrics, history, stop = Metrics(), History(every_s=0.05, span_s=10.0), threading.Event()
    sampler = Sampler(metrics.reading, history, stop)
    sampler.start()
    metrics.observe_batch(10)
    wait_until(lambda: len(history.points()) >= 3, 10, "three points")
    stop.set()
    sampler.join(5)
    assert not sampler.is_alive()
    points = history.points()
    assert [p["at"] for p in points] == sorted(p["at"] for p in points)
    assert sum(p["requests_per_s"] for p in points) > 0


def test_a_switch_to_a_newer_version_is_a_publish_and_back_to_an_earlier_model_a_rollback():
    a1, b2, a3 = update("a", 1), update("b", 2), update("a", 3)
    assert switch_kind(a1, b2, {(a1.instance, 1)}) == "publish"
    assert switch_kind(b2, a1, {("a", 1), ("b", 2)}) == "rollback"  # modelpublisher rollback
    assert switch_kind(b2, a3, {("a", 1), ("b", 2)}) == "publish"  # a fresh upload on the idle instance
    # Rolled back from b2 to a1, then "rollback" again: b2 comes back although its version is higher.
    assert switch_kind(a1, b2, {("a", 1), ("b", 2)}) == "rollback"
    moved = a1.model_copy(update={"grpc": "elsewhere:8500"})
    assert switch_kind(a1, moved, {("a", 1)}) == "publish"  # the live model at a new address


def test_the_router_keeps_each_switch_and_the_model_the_live_one_replaced():
    router = Router(retire_after_s=0.1)
    router.install(Route(update("a", 1), StatusOnly([True]), since=100.0))
    assert router.history == [] and router.previous is None  # the first model is no switch
    router.install(Route(update("b", 2), StatusOnly([True]), since=200.0))
    router.install(Route(update("a", 1), StatusOnly([True]), since=300.0))
    assert [(s.at, s.kind, s.old.instance, s.new.instance) for s in router.history] == [
        (200.0, "publish", "a", "b"),
        (300.0, "rollback", "b", "a"),
    ]
    assert (router.previous.instance, router.previous.version) == ("b", 2) and router.switches == 2


class StatusServer:
    """What build_app needs for /history: the real router, metrics and history, no Kafka loop."""

    def __init__(self) -> None:
        self.router, self.metrics, self.history = Router(retire_after_s=0.1), Metrics(), History()

    def state(self) -> dict:
        raise AssertionError("not used")

    def answer(self, batch, route):
        raise AssertionError("not used")


def test_get_history_gives_the_points_after_since_and_every_switch_with_both_models_figures():
    server = StatusServer()
    better = ModelMetrics(hr_at_10=0.4, ndcg_at_10=0.25, popularity_hr_at_10=0.1, popularity_ndcg_at_10=0.05)
    old, new = update("a", 1), ModelUpdate(**(update("b", 2).model_dump() | {"metrics": better}))
    server.router.install(Route(old, StatusOnly([True])))
    server.router.install(Route(new, StatusOnly([True]), since=1_795_000_005.5))
    for clock in (2.0, 4.0, 6.0):
        server.history.add(sample(reading(clock - 2, requests=0), reading(clock, requests=int(clock) * 10)))
    http = HttpServer(build_app(server), "127.0.0.1", 0)
    http.start()
    try:
        body = httpx.get(f"http://127.0.0.1:{http.port}/history", timeout=10).json()
        newest = body["points"][1]["at"]
        after = httpx.get(
            f"http://127.0.0.1:{http.port}/history", params={"since": newest}, timeout=10
        ).json()
    finally:
        http.stop()
    assert (body["every_s"], body["span_s"]) == (2.0, 600.0)
    assert [p["requests_per_s"] for p in body["points"]] == [10.0, 20.0, 30.0]
    assert body["switches"] == [
        {
            "at": 1_795_000_005.5,
            "kind": "publish",
            "from": {
                "instance": "a",
                "version": 1,
                "published_at": old.published_at,
                "metrics": old.metrics.model_dump(),
            },
            "to": {
                "instance": "b",
                "version": 2,
                "published_at": new.published_at,
                "metrics": better.model_dump(),
            },
        }
    ]
    assert [p["at"] for p in after["points"]] == [1_795_000_006.0]
