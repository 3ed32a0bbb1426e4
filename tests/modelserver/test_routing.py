"""The routing state machine, retries with backoff, and the metrics exposition (no network)."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.schemas import ModelMetrics, ModelUpdate
from modelserver.metrics import Metrics
from modelserver.routing import Route, Router, check_answers
from modelserver.serving import ServingError, with_retries
from tests.waiting import wait_until

METRICS = ModelMetrics(hr_at_10=0.3, ndcg_at_10=0.2, popularity_hr_at_10=0.1, popularity_ndcg_at_10=0.05)


def update(instance: str, version: int) -> ModelUpdate:
    return ModelUpdate(
        model="recommender",
        instance=instance,
        url=f"http://serving-{instance}:8501",
        grpc=f"serving-{instance}:8500",
        version=version,
        metrics=METRICS,
    )


class StatusOnly:
    """A stand-in for a serving client that only answers `available()` (pure state-machine tests)."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.closed_at: float | None = None  # time.monotonic() of close()

    def available(self) -> bool:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def predict(self, signature, inputs):
        raise AssertionError("not used")

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def close(self) -> None:
        self.closed_at = time.monotonic()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_batch_keeps_its_route_across_a_switch_and_the_old_client_is_retired_later():
    retire_after_s = 0.5
    router = Router(retire_after_s=retire_after_s)
    assert router.current is None
    old = Route(update("a", 1), StatusOnly([True]))
    assert router.install(old) is None and router.switches == 0
    in_flight = router.current  # what a batch took before the switch
    new = Route(update("b", 2), StatusOnly([True]))
    switched_at = time.monotonic()
    assert router.install(new) is old
    assert in_flight is old and router.current is new and router.switches == 1
    assert not old.client.closed  # a batch in flight may still be using it

    closed_at = wait_until(lambda: old.client.closed_at, 10, "the old client closed")
    assert closed_at - switched_at >= retire_after_s  # kept open for the whole grace period
    assert not new.client.closed


def test_same_target_ignores_a_republished_identical_update():
    route = Route(update("a", 1), StatusOnly([True]))
    assert route.same_target(update("a", 1))
    assert not route.same_target(update("a", 2))
    assert not route.same_target(update("b", 1))
    assert route.model.instance == "a" and route.model.version == 1


def test_check_answers_retries_with_backoff_until_available_or_deadline():
    clock = Clock()
    client = StatusOnly([False, False, False, True])
    assert check_answers(client, 30, sleep=clock.sleep, clock=clock)
    assert len(clock.sleeps) == 3 and clock.sleeps[0] < clock.sleeps[1] < clock.sleeps[2]

    clock = Clock()
    assert not check_answers(StatusOnly([False]), 5, sleep=clock.sleep, clock=clock)
    assert 5 <= clock.now < 5.5


def test_with_retries_retries_only_retryable_errors_until_the_deadline():
    clock = Clock()
    attempts = []

    def flaky():
        attempts.append(clock.now)
        if len(attempts) < 4:
            raise ServingError("UNAVAILABLE", retryable=True)
        return "ok"

    retried = []
    assert with_retries(flaky, 10, on_retry=retried.append, sleep=clock.sleep, clock=clock) == "ok"
    assert len(attempts) == 4 and len(retried) == 3

    def down():
        raise ServingError("UNAVAILABLE", retryable=True)

    clock = Clock()
    with pytest.raises(ServingError):
        with_retries(down, 3, sleep=clock.sleep, clock=clock)
    assert 3 <= clock.now < 3.5

    calls = []

    def bad_input():
        calls.append(1)
        raise ServingError("INVALID_ARGUMENT", retryable=False)

    with pytest.raises(ServingError):
        with_retries(bad_input, 10, sleep=Clock().sleep)
    assert calls == [1]


def test_metrics_parse_as_prometheus_exposition_and_state_has_percentiles():
    metrics = Metrics(recent=3)
    metrics.observe_batch(4)
    metrics.observe_replies(
        "a", [0.01 * (i + 1) for i in range(4)], [{"request_id": str(i)} for i in range(4)]
    )
    metrics.observe_dead_letter("not-json", {"dlq": "not-json"})
    metrics.switches.inc()
    metrics.predict_latency.labels("recommend").observe(0.02)
    metrics.set_lag({0: 5, 1: 7})
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    for name in (
        "recommender_requests",
        "recommender_replies",
        "recommender_dlq",
        "recommender_batch_size",
        "recommender_predict_latency_seconds",
        "recommender_request_latency_seconds",
        "recommender_model_switches",
        "recommender_consumer_lag",
    ):
        assert name in families, name
    replies = {
        s.labels.get("instance"): s.value
        for s in families["recommender_replies"].samples
        if s.name.endswith("_total")
    }
    assert replies == {"a": 4.0}
    state = metrics.snapshot()
    assert state["counts"] == {"requests": 4, "replies": 4, "dlq": 1, "batches": 1}
    assert state["latency_ms"]["p50"] == pytest.approx(25.0)
    assert state["consumer_lag"] == 12
    assert [r.get("request_id", r.get("dlq")) for r in state["recent"]] == ["2", "3", "not-json"]
