"""MinIO goes down while the trainer trains: the run fails with a clear error and publishes nothing.

The session's MinIO is stopped once the trainer has read its snapshot (training then runs with
the store gone) and is always restarted, since every other test shares it.
"""

from __future__ import annotations

import selectors
import subprocess
import sys
import time

import pytest

from common.schemas import ServingRecord, SnapshotPointer, now_ms
from common.settings import Settings
from common.storage import CURRENT_SNAPSHOT, SERVING_RECORD, ObjectStore
from datapublisher.generate import generate_purchases
from datapublisher.snapshots import publish_snapshot

pytestmark = pytest.mark.stack


def _read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """stderr of `process` up to the first line containing `marker`."""
    seen = []
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if marker in line:
                return "".join(seen)
    raise AssertionError(f"no {marker!r} line within {timeout:.0f}s; stderr so far:\n{''.join(seen)}")


def test_minio_down_during_training_fails_clearly_and_publishes_nothing(local_stack, stack_env):
    settings = Settings.load()
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    publish_snapshot(store, generate_purchases(users=300, products=100, purchases=5000, seed=5))
    # A live model is on record (on `b`), so the trainer targets `a`.
    live = ServingRecord(model="recommender", instance="b", version=1, published_at=now_ms(), metrics={
        "hr_at_10": 0.3, "ndcg_at_10": 0.2, "popularity_hr_at_10": 0.1, "popularity_ndcg_at_10": 0.05,
    })  # fmt: skip
    store.put_model(SERVING_RECORD, live)
    pointer_before = store.get_bytes(CURRENT_SNAPSHOT)
    serving_before = store.get_bytes(SERVING_RECORD)

    process = subprocess.Popen(
        [sys.executable, "-m", "recommender", "trainer", "run", "--epochs", "2", "--embedding-dim", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stack_env | {"TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        _read_until(process, "snapshot ", 60)  # read; training starts now
        local_stack.minio.stop()
        try:
            stdout, stderr = process.communicate(timeout=240)
        finally:
            local_stack.minio.start()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode != 0, stdout
    last_line = stderr.strip().splitlines()[-1]
    # A clear failure: the last line names the unreachable MinIO endpoint or the refused connection.
    assert "Connection refused" in stderr or settings.minio_endpoint in last_line, stderr[-2000:]
    assert "uploaded model" not in stdout
    print(f"\ntrainer with MinIO down, last line: {last_line[:300]}")

    # Nothing half-published: no version (marker or not), pointer and serving record unchanged.
    assert list(store.list_keys("models/a/")) == [] and store.model_versions("b") == []
    assert store.get_bytes(CURRENT_SNAPSHOT) == pointer_before
    assert store.get_bytes(SERVING_RECORD) == serving_before
    assert SnapshotPointer.model_validate_json(pointer_before).rows == 5000
