"""The live model's version and the per-partition consumer lag on /metrics (no broker, no serving)."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from modelserver import watcher
from modelserver.loop import ModelServer
from modelserver.metrics import Metrics
from modelserver.settings import ModelServerSettings
from tests.modelserver.test_routing import StatusOnly, update

TOPIC = "requests"


def series(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one family on /metrics, by their labels."""
    [family] = [f for f in text_string_to_metric_families(metrics.exposition().decode()) if f.name == name]
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def test_the_live_model_version_follows_each_switch_on_the_live_instance_only(monkeypatch):
    settings = ModelServerSettings.load()
    server = ModelServer(settings)
    server.router.retire_after_s = 0.1  # the replaced clients close soon, not after the test
    monkeypatch.setattr(watcher, "client_for", lambda *args: StatusOnly([True]))
    assert series(server.metrics, "recommender_live_model_version") == {}  # no model yet

    live = []
    for instance, version in [("a", 1_795_000_123), ("b", 1_795_003_600), ("a", 1_795_000_123)]:
        assert server.watcher._try_install(update(instance, version))
        live.append(series(server.metrics, "recommender_live_model_version"))
    # Set at start-up (the first model), then one series that moves with each switch, a rollback too.
    assert live == [
        {(("instance", "a"),): 1_795_000_123},
        {(("instance", "b"),): 1_795_003_600},
        {(("instance", "a"),): 1_795_000_123},
    ]
    assert series(server.metrics, "recommender_model_switches")[()] == 2
    assert series(server.metrics, "recommender_ready")[()] == 1


class Consumer:
    """What the lag measurement and the rebalance callbacks use of a consumer: an assignment,
    positions, watermarks and committed offsets."""

    def __init__(self, ends: dict[int, int], positions: dict[int, int], committed: dict[int, int]) -> None:
        self.ends, self.positions, self.committed_offsets = ends, positions, committed
        self.assigned: list[TopicPartition] = []

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [TopicPartition(tp.topic, tp.partition) for tp in partitions]

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def pause(self, partitions: list[TopicPartition]) -> None:
        pass

    def commit(self, asynchronous: bool = True) -> None:
        pass

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001))
            for tp in partitions
        ]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return (0, self.ends[tp.partition]) if tp.partition in self.ends else (-1001, -1001)

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.committed_offsets.get(tp.partition, -1001))
            for tp in partitions
        ]


def partitions(*numbers: int) -> list[TopicPartition]:
    return [TopicPartition(TOPIC, n) for n in numbers]


@pytest.fixture
def server() -> ModelServer:
    return ModelServer(ModelServerSettings.load())


def lags(server: ModelServer) -> dict[str, float]:
    """The lag series on /metrics, by partition."""
    found = series(server.metrics, "recommender_consumer_lag")
    return {dict(labels)["partition"]: value for labels, value in found.items()}


def measure(server: ModelServer, consumer: Consumer) -> dict[str, float]:
    server._next_lag = 0.0  # measure now, not LAG_EVERY_S after the last time
    server._measure_lag(consumer)
    return lags(server)


def test_the_lag_is_per_assigned_partition_and_a_revoked_partition_loses_its_series(server):
    # Partition 0 has a position, 1 only a committed offset, 2 neither (from the start), 3 no
    # watermark fetched yet (left out rather than reported as 0).
    consumer = Consumer(ends={0: 50, 1: 30, 2: 4}, positions={0: 45}, committed={1: 10})
    assert measure(server, consumer) == {}
    assert server.metrics.snapshot()["consumer_lag"] is None  # nothing assigned

    server._on_assign(consumer, partitions(0, 1, 2, 3))
    assert measure(server, consumer) == {"0": 5, "1": 20, "2": 4}
    assert server.metrics.snapshot()["consumer_lag"] == 29  # /state and /history keep the sum
    assert server.metrics.reading().lag == 29

    # A rebalance takes 0 and 1 away (eager: everything is revoked, then 2 and 3 come back). The
    # lost partitions' series go at once, before the next measurement.
    server._on_revoke(consumer, partitions(0, 1, 2, 3))
    assert lags(server) == {}
    assert server.metrics.snapshot()["consumer_lag"] is None
    server._on_assign(consumer, partitions(2, 3))
    consumer.ends[3] = 8
    assert measure(server, consumer) == {"2": 4, "3": 8}
    assert server.metrics.snapshot()["consumer_lag"] == 12

    # Cooperative rebalancing revokes only what moves; a partition missing from a measurement
    # loses its series too.
    server._on_revoke(consumer, partitions(3))
    assert lags(server) == {"2": 4}
    assert server.metrics.snapshot()["consumer_lag"] == 4
    server.metrics.set_lag({5: 1})
    assert lags(server) == {"5": 1}
