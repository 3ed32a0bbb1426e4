"""A real serving world shared by the model-server and fault tests: trained exports on two local
serving instances.

Built once per module (training and two TensorFlow servers are the slow part); each test gets
its own topics and its own model-server process. A test module uses it by importing the
fixtures `world`, `topics_env` and `start_modelserver` into its conftest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from client.core import ReplyCollector
from common.kafka import ensure_topics, make_producer
from common.schemas import ModelUpdate, RecommendationRequest, ServingRecord, now_ms
from common.settings import Settings
from common.storage import SERVING_RECORD, ObjectStore
from local.modelserver import ModelServerProcess
from local.stack import StackInfo
from local.stack.serving import ServingInstance
from local.world import announce, fresh_topics
from tests.waiting import wait_until


@dataclass
class World:
    env: dict[str, str]  # stack + bucket, no topics
    purchases: pd.DataFrame
    instances: dict[str, ServingInstance]
    versions: dict[str, int]
    metrics: dict

    def update(self, instance: str) -> ModelUpdate:
        return self.instances[instance].model_update(self.versions[instance], self.metrics)


@pytest.fixture(scope="module")
def world(stack_info: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from common.snapshots import read_current_snapshot
    from datapublisher.generate import generate_purchases
    from datapublisher.snapshots import publish_snapshot
    from trainer.export import export_saved_model
    from trainer.train import TrainConfig, train
    from trainer.upload import upload_export

    workdir = tmp_path_factory.mktemp("serving-world")
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
        | stack_info.env()
        | {"MINIO_BUCKET": f"test-ms-{uuid.uuid4().hex[:8]}"}
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        store = ObjectStore.from_settings(Settings.load())
        store.ensure_bucket()
        purchases = generate_purchases(users=300, products=150, purchases=6000, seed=3)
        publish_snapshot(store, purchases)
        trained = train(read_current_snapshot(store), TrainConfig(epochs=1, embedding_dim=8), verbose=0)
        export_saved_model(trained, workdir / "export")
        # Two uploads of the export: `a` first, then (once `a` is recorded live) `b` with a newer version.
        first, v1 = upload_export(store, workdir / "export")
        store.put_model(
            SERVING_RECORD,
            ServingRecord(
                model="recommender",
                instance=first,
                version=v1,
                published_at=now_ms(),
                metrics=trained.metrics,
            ),
        )
        second, v2 = upload_export(store, workdir / "export")
    assert (first, second) == ("a", "b") and v2 > v1
    instances = {name: ServingInstance(workdir / name, name, env=env) for name in ("a", "b")}
    try:
        for serving in instances.values():
            serving.start()
        instances["a"].wait_available(v1)
        instances["b"].wait_available(v2)
        yield World(env, purchases, instances, {"a": v1, "b": v2}, trained.metrics.model_dump())
    finally:
        for serving in instances.values():
            serving.stop()


@pytest.fixture
def topics_env(world: World, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The world's environment with fresh topics for this test; also set in os.environ."""
    env = world.env | fresh_topics()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ensure_topics(Settings.load(), partitions=2)
    return env


def answer_sentinels(settings: Settings, user: str, timeout: float = 60) -> list[str]:
    """A barrier for "nothing more arrives": one request into every partition of the requests
    topic, after everything sent so far, each waited for until answered. A model server takes a
    partition in order and has every reply of a batch acknowledged before it takes the next, so
    once these are answered every reply to anything sent before them is on the replies topic.
    Returns the sentinels' request ids."""
    collector = ReplyCollector(settings)
    collector.start()
    try:
        producer = make_producer(settings)
        topic = producer.list_topics(settings.topic_requests, timeout=10).topics[settings.topic_requests]
        ids = []
        for partition in topic.partitions:
            request = RecommendationRequest(request_id=f"sentinel-{uuid.uuid4().hex[:8]}", user=user, k=1)
            producer.produce(
                settings.topic_requests, key=user.encode(), value=request.to_bytes(), partition=partition
            )
            ids.append(request.request_id)
        assert producer.flush(15) == 0
        wait_until(lambda: all(rid in collector.answers for rid in ids), timeout, "the sentinels answered")
        return ids
    finally:
        collector.close()


def publish_update(update: ModelUpdate) -> None:
    """Announce `update` on this test's topics (those of `topics_env`, in os.environ)."""
    announce(Settings.load(), update)


@pytest.fixture
def start_modelserver(topics_env: dict[str, str], tmp_path: Path) -> Iterator:
    """Start model-server processes with extra variables; all are stopped after the test."""
    started: list[ModelServerProcess] = []

    def start(**extra: str) -> ModelServerProcess:
        server = ModelServerProcess(tmp_path / f"modelserver-{len(started)}", dict(os.environ) | extra)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
