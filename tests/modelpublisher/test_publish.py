"""The publisher on the real stack: trainer export -> model sync -> local server -> publish -> Kafka.

One real trainer export (small generated data) is uploaded to instance `a` of a module bucket and
served by a local serving instance (processes). Each test gets its own model-updates topic and
starts without a serving record.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pandas as pd
import pytest

from common.kafka import ensure_topics, make_consumer
from common.schemas import ModelMetrics, ModelUpdate, ServingRecord
from common.settings import Settings
from common.snapshots import read_current_snapshot
from common.storage import PURCHASES_FILE, SERVING_RECORD, ObjectStore, snapshot_prefix
from datapublisher.generate import generate_purchases
from datapublisher.snapshots import publish_snapshot, to_parquet_bytes
from local.stack.servers import free_port
from modelpublisher.publisher import ModelPublisherSettings, PublishError, publish, rollback, settle_pending
from trainer.config import TrainConfig
from trainer.export import export_saved_model
from trainer.train import train
from trainer.upload import upload_export

FAST = TrainConfig(epochs=4, embedding_dim=16, batch_size=2048, learning_rate=0.01)


@dataclass
class Served:
    env: dict[str, str]  # MinIO + bucket + SERVING_A_* for this module
    store: ObjectStore
    version: int
    metrics: ModelMetrics
    snapshot_id: str


@pytest.fixture(scope="module")
def served(stack_info, serving_instances, tmp_path_factory) -> Served:
    env = stack_info.env() | {"MINIO_BUCKET": f"test-{uuid.uuid4().hex[:8]}"}
    store = ObjectStore.from_settings(Settings.load(**{k.lower(): v for k, v in env.items()}))
    publish_snapshot(store, generate_purchases(users=2000, products=300, purchases=40_000, seed=11))
    snapshot = read_current_snapshot(store)
    trained = train(snapshot, FAST, verbose=0)
    instance, version = upload_export(
        store, export_saved_model(trained, tmp_path_factory.mktemp("export") / "m")
    )
    assert instance == "a"
    serving = serving_instances("a", env)
    serving.wait_available(version, timeout=180)  # export -> sync -> loaded by the local server
    return Served(env | serving.env(), store, version, trained.metrics, snapshot.pointer.snapshot_id)


@pytest.fixture
def pub_settings(served, monkeypatch) -> ModelPublisherSettings:
    for name in [n for n in os.environ if n.startswith(("KAFKA_", "PUBLISHER_", "SERVING_"))]:
        monkeypatch.delenv(name)
    for name, value in served.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOPIC_MODEL_UPDATES", f"model-updates-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("PUBLISHER_LOAD_DEADLINE_SECONDS", "60")
    settings = ModelPublisherSettings.load()
    ensure_topics(settings)
    if served.store.exists(SERVING_RECORD):
        served.store.client.remove_object(served.store.bucket, SERVING_RECORD)
    return settings


def updates_on_topic(
    settings: Settings, expect: int, timeout: float = 20.0
) -> list[tuple[bytes, ModelUpdate]]:
    consumer = make_consumer(settings, f"test-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False})
    consumer.subscribe([settings.topic_model_updates])
    seen = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(seen) < expect + 1:
            message = consumer.poll(0.5 if len(seen) < expect else 2.0)
            if message is not None and not message.error():
                seen.append((message.key(), ModelUpdate.model_validate_json(message.value())))
            elif len(seen) >= expect and message is None:
                break
    finally:
        consumer.close()
    return seen


def topic_is_empty(settings: Settings) -> bool:
    from confluent_kafka import TopicPartition

    consumer = make_consumer(settings, f"test-{uuid.uuid4().hex[:6]}")
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(settings.topic_model_updates, 0), timeout=10)
    finally:
        consumer.close()
    return high == 0


def test_export_sync_load_publish_and_a_consumer_sees_it(served, pub_settings):
    assert served.metrics.hr_at_10 > served.metrics.popularity_hr_at_10  # the trainer's model is worth gating

    result = subprocess.run(
        [sys.executable, "-m", "recommender", "modelpublisher", "publish"],  # idle instance, newest version
        capture_output=True, text=True, env=dict(os.environ), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"published recommender version {served.version} on instance a" in result.stdout

    record = served.store.get_model(SERVING_RECORD, ServingRecord)
    assert (record.instance, record.version, record.previous) == ("a", served.version, None)
    assert record.metrics.hr_at_10 == served.metrics.hr_at_10

    [(key, update)] = updates_on_topic(pub_settings, expect=1)
    assert key == b"recommender"
    assert (update.instance, update.version, update.url, update.grpc) == (
        "a", served.version, pub_settings.serving_a_url, pub_settings.serving_a_grpc,
    )  # fmt: skip
    assert update.metrics == record.metrics and update.published_at == record.published_at


def test_gate_failure_publishes_nothing(served, pub_settings):
    strict = pub_settings.model_copy(update={"publisher_margin": 0.99})
    with pytest.raises(PublishError, match=r"^quality gate: hr_at_10 .* does not beat popularity"):
        publish(strict, "a", served.version)
    assert not served.store.exists(SERVING_RECORD)
    assert topic_is_empty(pub_settings)


def test_worse_than_live_publishes_nothing_and_keeps_the_record(served, pub_settings):
    better = served.metrics.model_copy(update={"hr_at_10": 1.0, "ndcg_at_10": 1.0})
    live = ServingRecord(model="recommender", instance="b", version=1, published_at=1, metrics=better)
    served.store.put_model(SERVING_RECORD, live)
    before = served.store.get_bytes(SERVING_RECORD)
    with pytest.raises(PublishError, match=r"below the live model's 1\.0000"):
        publish(pub_settings, "a", served.version)
    assert served.store.get_bytes(SERVING_RECORD) == before
    assert topic_is_empty(pub_settings)


def test_canary_failure_publishes_nothing(served, pub_settings):
    # The snapshot the model was trained on is replaced by one of strangers: the canary's "known"
    # users get the popularity fallback, as after a model/data mix-up.
    key = snapshot_prefix(served.snapshot_id) + PURCHASES_FILE
    original = served.store.get_bytes(key)
    strangers = pd.DataFrame(
        {
            "user": ["x1", "x2", "x3"],
            "product": ["p1", "p2", "p3"],
            "quantity": [1, 1, 1],
            "timestamp": [1, 2, 3],
        }
    ).astype({"quantity": "int32", "timestamp": "int64"})
    served.store.put_bytes(key, to_parquet_bytes(strangers))
    try:
        with pytest.raises(
            PublishError, match=r"^canary failed on recommender .* got the popularity fallback"
        ):
            publish(pub_settings, "a", served.version)
    finally:
        served.store.put_bytes(key, original)
    assert not served.store.exists(SERVING_RECORD)
    assert topic_is_empty(pub_settings)


def test_instance_down_fails_within_the_deadline(served, pub_settings):
    down = pub_settings.model_copy(
        update={"serving_a_url": f"http://127.0.0.1:{free_port()}", "publisher_load_deadline_seconds": 3.0}
    )
    started = time.monotonic()
    with pytest.raises(PublishError) as error:
        publish(down, "a", served.version)
    assert time.monotonic() - started < 15
    assert f"recommender version {served.version} not AVAILABLE at {down.serving_a_url} within 3s" in str(
        error.value
    )
    assert "ConnectError" in str(error.value) and "\n" not in str(error.value)
    assert not served.store.exists(SERVING_RECORD)
    assert topic_is_empty(pub_settings)


def test_cli_reports_a_failure_in_one_line(served, pub_settings):
    env = dict(os.environ) | {
        "SERVING_A_URL": f"http://127.0.0.1:{free_port()}",
        "PUBLISHER_LOAD_DEADLINE_SECONDS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "recommender", "modelpublisher", "publish", "--instance", "a",
         "--version", str(served.version)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]  # the lines before it are INFO logs
    assert last_line.startswith("error: recommender version") and "not AVAILABLE" in last_line
    assert not served.store.exists(SERVING_RECORD)


def test_rollback_republishes_the_previous_model(served, pub_settings):
    previous = ServingRecord(
        model="recommender", instance="a", version=served.version, published_at=1, metrics=served.metrics
    )
    live = ServingRecord(
        model="recommender", instance="b", version=served.version + 1, published_at=2,
        metrics=served.metrics, previous=previous,
    )  # fmt: skip
    served.store.put_model(SERVING_RECORD, live)

    update = rollback(pub_settings)

    assert (update.instance, update.version) == ("a", served.version)
    record = served.store.get_model(SERVING_RECORD, ServingRecord)
    assert (record.instance, record.version) == ("a", served.version)
    assert (record.previous.instance, record.previous.version) == ("b", served.version + 1)
    [(_, seen)] = updates_on_topic(pub_settings, expect=1)
    assert seen == update

    # Rolling back again would target b, which no serving instance runs here: refused, unchanged.
    before = served.store.get_bytes(SERVING_RECORD)
    with pytest.raises(PublishError, match="not AVAILABLE"):
        rollback(pub_settings.model_copy(update={"publisher_load_deadline_seconds": 1.0}))
    assert served.store.get_bytes(SERVING_RECORD) == before


def test_an_unconfirmed_delivery_stays_pending_until_the_topic_settles_it(served, pub_settings, monkeypatch):
    live = ServingRecord(model="recommender", instance="b", version=1, published_at=1, metrics=served.metrics)
    served.store.put_model(SERVING_RECORD, live)
    good_kafka = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")  # nothing listens there
    quick = pub_settings.model_copy(update={"publisher_delivery_timeout_seconds": 1.0})
    with pytest.raises(PublishError, match=r"timed out; models/serving.json keeps the publish pending"):
        publish(quick, "a", served.version)
    record = served.store.get_model(SERVING_RECORD, ServingRecord)
    assert (record.pending.instance, record.pending.version, record.previous) == ("a", served.version, live)

    # The update never reached the topic: settling puts the live record back, unchanged.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", good_kafka)
    assert settle_pending(pub_settings, served.store) == live
    assert served.store.get_model(SERVING_RECORD, ServingRecord) == live
    assert topic_is_empty(pub_settings)


def test_a_new_version_on_the_live_instance_is_refused(served, pub_settings):
    live = ServingRecord(model="recommender", instance="a", version=1, published_at=1, metrics=served.metrics)
    served.store.put_model(SERVING_RECORD, live)
    with pytest.raises(PublishError, match=r"instance a is live .* on the idle instance b"):
        publish(pub_settings, "a", served.version)
    assert served.store.get_model(SERVING_RECORD, ServingRecord) == live
    assert topic_is_empty(pub_settings)


def test_rollback_without_previous_is_refused(pub_settings):
    with pytest.raises(PublishError, match="nothing to roll back to"):
        rollback(pub_settings)
