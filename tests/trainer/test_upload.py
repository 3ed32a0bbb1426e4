"""Publishing exports on the real MinIO: idle instance, growing versions, marker last, live untouched.

A publish a crash left pending in serving.json is settled from the real `model-updates` topic first.
"""

import pytest

from common.kafka import ensure_topics, make_producer
from common.schemas import ModelMetrics, ModelUpdate, ServingRecord
from common.storage import (
    COMPLETION_MARKER,
    CURRENT_SNAPSHOT,
    SERVING_RECORD,
    ObjectStore,
    PendingPublishError,
    idle_instance,
    model_prefix,
    model_version_prefix,
)
from modelpublisher.publisher import PublishError
from recommender.cli import main
from trainer.upload import upload_export

from .conftest import Exported

METRICS = ModelMetrics(hr_at_10=0.3, ndcg_at_10=0.2, popularity_hr_at_10=0.1, popularity_ndcg_at_10=0.05)


@pytest.fixture
def store(settings):
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    return store


def objects(store, prefix):
    """key -> (etag, last modified) of everything under prefix."""
    return {
        o.object_name: (o.etag, o.last_modified)
        for o in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)
    }


def make_live(store, instance, version):
    record = ServingRecord(
        model="recommender", instance=instance, version=version, published_at=1, metrics=METRICS
    )
    store.put_model(SERVING_RECORD, record)


def update_of(instance, version, published_at):
    return ModelUpdate(
        model="recommender", instance=instance, url=f"http://serving-{instance}:8501",
        grpc=f"serving-{instance}:8500", version=version, published_at=published_at, metrics=METRICS,
    )  # fmt: skip


def pending_record(instance, version, previous):
    """serving.json as the publisher leaves it when killed between its record and its Kafka write."""
    update = update_of(instance, version, published_at=10)
    return ServingRecord(
        model="recommender", instance=instance, version=version, published_at=10, metrics=METRICS,
        previous=previous, pending=update,
    )  # fmt: skip


def announce(settings, update):
    producer = make_producer(settings)
    producer.produce(settings.topic_model_updates, key=b"recommender", value=update.to_bytes())
    assert producer.flush(15) == 0


def test_runs_alternate_to_the_idle_instance_and_never_touch_the_live_one(store, exported: Exported):
    first = upload_export(store, exported.export_dir)
    assert first[0] == "a"
    files = objects(store, model_version_prefix(*first))
    marker = model_version_prefix(*first) + COMPLETION_MARKER
    assert marker in files and len(files) > 3
    # The marker was written after every other file of the version.
    assert all(files[marker][1] >= modified for _, modified in files.values())
    assert store.model_versions("a") == [first[1]]

    make_live(store, *first)
    live_before = objects(store, model_prefix("a"))
    second = upload_export(store, exported.export_dir)
    assert second[0] == "b" and second[1] > first[1]
    assert objects(store, model_prefix("a")) == live_before
    assert store.model_versions("b") == [second[1]]

    # A half-written version (no marker) still reserves its number: versions are never reused.
    store.put_bytes(model_version_prefix("a", second[1] + 100) + "saved_model.pb", b"partial")
    make_live(store, *second)
    live_before = objects(store, model_prefix("b"))
    third = upload_export(store, exported.export_dir)
    assert third == ("a", second[1] + 101)
    assert objects(store, model_prefix("b")) == live_before
    assert store.model_versions("a") == [first[1], third[1]]


def test_without_serving_record_the_target_is_a(store, exported: Exported):
    runs = [upload_export(store, exported.export_dir) for _ in range(2)]
    assert [instance for instance, _ in runs] == ["a", "a"]
    assert runs[1][1] > runs[0][1]


def test_upload_refuses_a_directory_without_a_model(store, tmp_path):
    with pytest.raises(FileNotFoundError):
        upload_export(store, tmp_path)
    assert list(store.list_keys("models/")) == []


def test_cli_without_snapshot_is_a_clear_error(store, capsys):
    assert main(["trainer", "run", "--epochs", "1"]) == 1
    assert "no current snapshot: run recommender datapublisher publish first" in capsys.readouterr().err


def test_cli_publish_then_train(store, capsys):
    assert main(["datapublisher", "publish", "--generate", "--preset", "small", "--seed", "5"]) == 0
    assert store.exists(CURRENT_SNAPSHOT)
    code = main(
        [
            "trainer",
            "run",
            "--epochs",
            "1",
            "--embedding-dim",
            "8",
            "--batch-size",
            "4096",
            "--learning-rate",
            "0.01",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "popularity HR@10" in out
    version = store.model_versions("a")
    assert len(version) == 1 and f"models/a/{version[0]}/ (instance a, version {version[0]})" in out


def test_a_pending_first_publish_is_settled_by_the_topic_before_choosing(store, settings, exported: Exported):
    ensure_topics(settings)
    store.put_model(SERVING_RECORD, pending_record("a", 5, previous=None))
    with pytest.raises(PendingPublishError, match="pending publish of instance a version 5"):
        idle_instance(store)  # unsettled, either instance may be live

    # Never announced (the topic is empty): nothing is live, the record goes, `a` is free.
    assert upload_export(store, exported.export_dir)[0] == "a"
    assert not store.exists(SERVING_RECORD)

    # Announced before the crash: `a` is live, the record is finalized, the upload goes to `b`.
    store.put_model(SERVING_RECORD, pending_record("a", 5, previous=None))
    announce(settings, update_of("a", 5, published_at=10))
    live_before = objects(store, model_prefix("a"))
    assert upload_export(store, exported.export_dir)[0] == "b"
    assert objects(store, model_prefix("a")) == live_before
    record = store.get_model(SERVING_RECORD, ServingRecord)
    assert (record.instance, record.version, record.pending, record.previous) == ("a", 5, None, None)


def test_a_pending_publish_that_disagrees_with_the_topic_is_refused(store, settings, exported: Exported):
    ensure_topics(settings)
    live = ServingRecord(model="recommender", instance="a", version=4, published_at=1, metrics=METRICS)
    store.put_model(SERVING_RECORD, pending_record("b", 5, previous=live))
    announce(settings, update_of("b", 3, published_at=2))  # neither the pending nor the previous model
    before = store.get_bytes(SERVING_RECORD)
    with pytest.raises(PublishError, match="names instance b version 3, which is neither"):
        upload_export(store, exported.export_dir)
    assert store.get_bytes(SERVING_RECORD) == before
    assert list(store.list_keys("models/a/")) == list(store.list_keys("models/b/")) == []
