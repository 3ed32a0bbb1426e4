"""Publishing exports on the real MinIO: idle instance, growing versions, marker last, live untouched."""

import pytest

from common.schemas import ModelMetrics, ServingRecord
from common.storage import (
    COMPLETION_MARKER,
    CURRENT_SNAPSHOT,
    SERVING_RECORD,
    ObjectStore,
    model_prefix,
    model_version_prefix,
)
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
