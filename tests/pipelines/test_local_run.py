"""`recommender pipeline run --local` on the real stack, two serving instances and a model server."""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from client.core import recommend
from common.kafka import ensure_topics, make_consumer
from common.schemas import ServingRecord
from common.settings import Settings
from common.storage import SERVING_RECORD, ObjectStore
from local.modelserver import ModelServerProcess
from local.stack.serving import ServingInstance
from recommender.cli import main

# Small but learnable: the model beats popularity, so the gate passes.
SMALL = ["--param", "data_users=2000", "--param", "data_products=300", "--param", "data_purchases=40000",
         "--param", "epochs=4", "--param", "embedding_dim=16", "--param", "batch_size=2048",
         "--param", "learning_rate=0.01"]  # fmt: skip


@pytest.fixture
def world(stack_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    settings = Settings.load()
    ensure_topics(settings)
    ObjectStore.from_settings(settings).ensure_bucket()
    monkeypatch.setenv("PIPELINE_ROOT", str(tmp_path / "kfp"))
    instances = [ServingInstance(tmp_path / name, name, env=dict(os.environ)) for name in ("a", "b")]
    server = None
    try:
        for serving in instances:
            serving.start()
            for name, value in serving.env().items():
                monkeypatch.setenv(name, value)
        server = ModelServerProcess(
            tmp_path / "modelserver", dict(os.environ) | {"MODELSERVER_GROUP_ID": "pl"}
        )
        server.start()
        yield {"settings": settings, "store": ObjectStore.from_settings(settings), "server": server}
    finally:
        if server is not None:
            server.stop()
        for serving in instances:
            serving.stop()


def _reply_model(settings: Settings, expected_version: int, timeout: float = 90.0) -> tuple[str, int]:
    """Ask until a reply comes from `expected_version` (the switch is asynchronous)."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        _, answer, dead, _ = recommend(settings, "u1", 5, timeout=20)
        assert dead is None, dead
        if answer is not None:
            seen = (answer.reply.model.instance, answer.reply.model.version)
            assert len(answer.reply.items) == 5
            if seen[1] == expected_version:
                return seen
        time.sleep(1)
    raise AssertionError(f"replies still come from {seen}, not version {expected_version}")


def _update_count(settings: Settings) -> int:
    consumer = make_consumer(settings, "count")
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(settings.topic_model_updates, 0), timeout=10)
        return high
    finally:
        consumer.close()


def test_runs_publish_models_the_model_server_switches_to_and_a_failed_gate_publishes_nothing(world):
    settings, store = world["settings"], world["store"]

    assert main(["pipeline", "run", "--local", "--publish-new-data", *SMALL]) == 0
    first = store.get_model(SERVING_RECORD, ServingRecord)
    assert first is not None and first.instance == "a"
    assert _reply_model(settings, first.version) == ("a", first.version)

    # A gate the model cannot pass: the run succeeds, and nothing is exported or published.
    models_before = sorted(store.list_keys("models/"))
    updates_before = _update_count(settings)
    assert main(["pipeline", "run", "--local", *SMALL, "--param", "gate_margin=0.9"]) == 0
    assert store.get_model(SERVING_RECORD, ServingRecord) == first
    assert sorted(store.list_keys("models/")) == models_before
    assert _update_count(settings) == updates_before

    assert main(["pipeline", "run", "--local", *SMALL]) == 0
    second = store.get_model(SERVING_RECORD, ServingRecord)
    assert second.instance == "b" and second.version > first.version
    assert second.previous is not None and second.previous.version == first.version
    assert _reply_model(settings, second.version) == ("b", second.version)
