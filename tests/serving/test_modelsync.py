"""Model sync against the real MinIO: complete versions only, atomic renames, keep N, outages."""

from __future__ import annotations

import logging
import threading

import pytest

from common.storage import ObjectStore, completion_marker, model_version_prefix
from modelsync.sync import TMP_PREFIX, ModelSync
from tests.serving.tiny_model import save_tiny_model
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("export") / "model")


@pytest.fixture
def store(settings):
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    return store


def upload(store, export_dir, version: int, complete: bool = True, instance: str = "a") -> None:
    store.upload_dir(export_dir, model_version_prefix(instance, version))
    if complete:
        store.put_bytes(completion_marker(instance, version), b"")


def test_mirrors_complete_versions_and_keeps_newest(store, export_dir, tmp_path):
    for version, complete in ((1, True), (2, True), (5, False), (3, True)):
        upload(store, export_dir, version, complete)
    upload(store, export_dir, 9, instance="b")  # the other instance is not ours
    model_dir = tmp_path / "recommender"
    sync = ModelSync(store, "a", model_dir, keep=2)

    result = sync.sync_once()
    assert result.downloaded == [2, 3] and result.removed == []
    assert sync.local_versions() == [2, 3]
    for version in (2, 3):
        files = {
            p.relative_to(model_dir / str(version)).as_posix() for p in (model_dir / str(version)).rglob("*")
        }
        assert "saved_model.pb" in files and "variables/variables.index" in files
        assert "_COMPLETE" not in files
    assert not list(model_dir.glob(f"{TMP_PREFIX}*"))

    assert sync.sync_once().downloaded == []  # nothing new: nothing fetched again

    store.put_bytes(completion_marker("a", 5), b"")  # version 5 completes: it replaces 2
    assert sync.sync_once() == type(result)(downloaded=[5], removed=[2])
    assert sync.local_versions() == [3, 5]

    store.delete_prefix(model_version_prefix("a", 5))  # deleted remotely: still kept locally
    sync.sync_once()
    assert sync.local_versions() == [3, 5]


def test_leftover_temp_dirs_are_cleaned_and_never_look_like_versions(store, export_dir, tmp_path):
    model_dir = tmp_path / "recommender"
    (model_dir / f"{TMP_PREFIX}7-abc").mkdir(parents=True)  # as a crash mid-download leaves it
    upload(store, export_dir, 7)
    sync = ModelSync(store, "a", model_dir, keep=2)
    assert sync.sync_once().downloaded == [7]
    assert [p.name for p in model_dir.iterdir()] == ["7"]


def test_survives_minio_outage_and_logs_each_change_once(local_stack, store, export_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="modelsync.sync")
    upload(store, export_dir, 1)
    sync = ModelSync(store, "a", tmp_path / "recommender", keep=2)
    failures = _count_failures(sync)
    stop = threading.Event()
    thread = threading.Thread(target=sync.run, args=(stop, 0.1, 0.5), daemon=True)
    thread.start()
    try:
        wait_until(lambda: sync.local_versions() == [1], 60, "version 1 mirrored")
        local_stack.minio.stop()
        try:
            wait_until(lambda: _count(caplog, "MinIO unreachable") == 1, 60, "the outage logged")
            # Several failed attempts under backoff...
            wait_until(lambda: len(failures) >= 3, 60, "three failed sync attempts")
            assert _count(caplog, "MinIO unreachable") == 1  # ...logged once
        finally:
            local_stack.minio.start()
        wait_until(lambda: _count(caplog, "MinIO reachable again") == 1, 60, "the recovery logged")
        upload(store, export_dir, 2)
        wait_until(lambda: sync.local_versions() == [1, 2], 60, "version 2 mirrored after the outage")
        assert _count(caplog, "MinIO reachable again") == 1
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def _count_failures(sync: ModelSync) -> list[BaseException]:
    """Record every failed `sync_once` of `sync` (the loop's attempts), still raising each."""
    failures: list[BaseException] = []
    attempt = sync.sync_once

    def counted() -> object:
        try:
            return attempt()
        except Exception as exc:
            failures.append(exc)
            raise

    sync.sync_once = counted
    return failures


def _count(caplog, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)
