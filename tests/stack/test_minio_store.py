"""put/get/list and the model-version rules on the real MinIO."""

import pytest

from common.schemas import SnapshotPointer
from common.storage import CURRENT_SNAPSHOT, ObjectStore, completion_marker, model_version_prefix


@pytest.fixture
def store(settings):
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    return store


def test_put_get_list_delete(store):
    store.put_bytes("data/snapshots/s1/a.bin", b"\x00\x01")
    store.put_bytes("data/snapshots/s1/b.bin", b"two")
    store.put_bytes("data/snapshots/s2/a.bin", b"other")
    assert store.get_bytes("data/snapshots/s1/b.bin") == b"two"
    assert store.get_bytes("data/snapshots/missing") is None
    assert sorted(store.list_keys("data/snapshots/s1/")) == [
        "data/snapshots/s1/a.bin",
        "data/snapshots/s1/b.bin",
    ]
    assert store.delete_prefix("data/snapshots/s1/") == 2
    assert list(store.list_keys("data/snapshots/s1/")) == []
    assert store.exists("data/snapshots/s2/a.bin")
    with pytest.raises(ValueError):
        store.delete_prefix("data/snapshots/s")


def test_records_round_trip(store):
    pointer = SnapshotPointer(snapshot_id="s", path="p", rows=1, users=1, products=1, created_at=5)
    assert store.get_model(CURRENT_SNAPSHOT, SnapshotPointer) is None
    store.put_model(CURRENT_SNAPSHOT, pointer)
    assert store.get_model(CURRENT_SNAPSHOT, SnapshotPointer) == pointer


def test_only_versions_with_a_marker_count(store, tmp_path):
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"pb")
    (export / "variables" / "variables.index").write_bytes(b"idx")
    for version in (3, 12):
        assert store.upload_dir(export, model_version_prefix("a", version)) == 2
    store.put_bytes(completion_marker("a", 12), b"")
    assert store.model_versions("a") == [12]
    store.put_bytes(completion_marker("a", 3), b"")
    assert store.model_versions("a") == [3, 12]
    assert store.model_versions("b") == []

    target = tmp_path / "download"
    assert store.download_prefix(model_version_prefix("a", 12), target) == 3
    assert (target / "variables" / "variables.index").read_bytes() == b"idx"
