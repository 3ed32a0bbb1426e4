"""The model publisher SIGKILLed at each step boundary: the next run never writes under the live instance.

`recommender modelpublisher publish` runs as a subprocess with PUBLISHER_TEST_PAUSE_AT naming a
boundary (the publisher's test-only hook: it logs `paused at <boundary>` and blocks), and is
SIGKILLed once it says so. Then a pipeline-like run (the pipeline's own export and publish steps)
must upload to the instance the latest update on `model-updates` does *not* name (what the model
servers route by), leave every object under the live prefix as it was, and the live instance must
still serve its version, and only it. Real Kafka, MinIO and two serving instances (sync + stand-in).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from common.schemas import ServingRecord, other_instance
from common.settings import Settings
from common.storage import (
    COMPLETION_MARKER,
    EXPORT_METADATA,
    SERVING_RECORD,
    ObjectStore,
    model_prefix,
    model_version_prefix,
)
from modelpublisher.publisher import PAUSE_AT_VARIABLE, latest_update
from pipelines.config import PipelineConfig
from pipelines.steps import export_step, publish_step
from tests.serving_world import World

pytestmark = pytest.mark.stack

BOUNDARIES = ["checked", "recorded", "announced"]  # before any write / pending written / update delivered


@pytest.fixture
def env(world: World, topics_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The world with fresh topics, both instances' addresses, and the publisher's variables."""
    extra = {
        **world.instances["a"].env(),
        **world.instances["b"].env(),
        "PUBLISHER_LOAD_DEADLINE_SECONDS": "30",
        "MINIO_SECURE": "false",
        "PUBLISHER_MARGIN": "0.0",
        "PUBLISHER_TOLERANCE": "0.02",
        "KAFKA_BOOTSTRAP_SERVERS": topics_env["KAFKA_BOOTSTRAP_SERVERS"],
    }
    # In os.environ: the publisher process of kill_at reads them, and so do the steps' settings for
    # what is not a pipeline parameter (PUBLISHER_LOAD_DEADLINE_SECONDS).
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


def gated_export(store: ObjectStore, world: World, directory: Path) -> Path:
    """The world's export, with metrics that beat popularity (a 1-epoch model may not)."""
    store.download_prefix(model_version_prefix("a", world.versions["a"]), directory)
    (directory / COMPLETION_MARKER).unlink()
    metadata = json.loads((directory / EXPORT_METADATA).read_text())
    metadata["metrics"] |= {"hr_at_10": 0.95, "ndcg_at_10": 0.95}
    (directory / EXPORT_METADATA).write_text(json.dumps(metadata))
    return directory


def objects(store: ObjectStore, prefix: str) -> dict[str, tuple[str, object]]:
    return {
        o.object_name: (o.etag, o.last_modified)
        for o in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)
    }


def kill_at(boundary: str, env: dict[str, str], timeout: float = 60.0) -> None:
    """Run `modelpublisher publish` (idle instance, newest version) and SIGKILL it at `boundary`."""
    marker = f"paused at {boundary}"
    process = subprocess.Popen(
        [sys.executable, "-m", "recommender", "modelpublisher", "publish"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env | {PAUSE_AT_VARIABLE: boundary},
    )  # fmt: skip
    # A blocking line loop (select() would miss lines already in the pipe's read buffer); the
    # watchdog's kill ends it with EOF if the boundary is never reached.
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        for line in process.stderr:
            seen.append(line)
            if marker in line:
                break
        else:
            raise AssertionError(f"the publisher exited or hung before {marker!r}:\n{''.join(seen)}")
    finally:
        watchdog.cancel()
        process.kill()  # SIGKILL: no handler, no finally block of the publisher runs
        process.wait()


def pipeline_config(env: dict[str, str]) -> PipelineConfig:
    """The pipeline parameters of a run against this world, as the components pass them."""
    names = ("minio_endpoint", "minio_bucket", "kafka_bootstrap_servers", "topic_model_updates", "model_name",
             "serving_a_url", "serving_a_grpc", "serving_b_url", "serving_b_grpc")  # fmt: skip
    fixed = {"minio_secure": False, "gate_margin": 0.0, "gate_tolerance": 0.02}
    return PipelineConfig(**{name: env[name.upper()] for name in names}, **fixed)


def export(env: dict[str, str], export_dir: Path) -> tuple[str, int]:
    """The pipeline's export step, as its component calls it."""
    return export_step(pipeline_config(env), str(export_dir))


def pipeline_run(env: dict[str, str], export_dir: Path) -> tuple[str, int]:
    """The pipeline's export and publish steps, as its components call them."""
    instance, version = export(env, export_dir)
    publish_step(pipeline_config(env), instance, version)
    return instance, version


def pinned_predict_status(url: str, version: int, user: str) -> int:
    request = urllib.request.Request(
        f"{url}/v1/models/recommender/versions/{version}:predict",
        data=json.dumps({"signature_name": "recommend", "inputs": {"users": [user], "k": [3]}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_publisher_killed_at_any_step_boundary_never_lets_the_next_run_touch_the_live_instance(
    world: World, env: dict[str, str], tmp_path: Path
):
    settings = Settings.load()
    store = ObjectStore.from_settings(settings)
    export_dir = gated_export(store, world, tmp_path / "export")
    user = str(world.purchases["user"].value_counts().index[0])

    pipeline_run(env, export_dir)  # a live model, announced on this test's topic
    export(env, export_dir)  # and a candidate on the idle instance, for the first killed publish

    for boundary in BOUNDARIES:
        before = latest_update(settings, "recommender")
        candidate = other_instance(before.instance)
        candidate_version = store.model_versions(candidate)[-1]

        kill_at(boundary, env)

        # What the crash left: the topic moved only if the update was delivered.
        live = latest_update(settings, "recommender")
        record = store.get_model(SERVING_RECORD, ServingRecord)
        if boundary == "announced":
            assert (live.instance, live.version) == (candidate, candidate_version), boundary
        else:
            assert live == before, boundary
        if boundary != "checked":
            assert (record.instance, record.version) == (candidate, candidate_version), boundary

        live_objects = objects(store, model_prefix(live.instance))
        instance, version = pipeline_run(env, export_dir)

        assert instance != live.instance, f"killed at {boundary}: the next run uploaded under live {instance}"
        assert objects(store, model_prefix(live.instance)) == live_objects, boundary
        # The live instance still serves its version, and only it: nothing new was loaded there.
        assert world.instances[live.instance].available_versions() == [live.version], boundary
        assert pinned_predict_status(live.url, live.version, user) == 200, boundary
        # The run published what it uploaded, and the record agrees with the topic again.
        after = latest_update(settings, "recommender")
        assert (after.instance, after.version) == (instance, version), boundary
        settled = store.get_model(SERVING_RECORD, ServingRecord)
        assert (settled.instance, settled.version, settled.pending) == (instance, version, None), boundary
        assert (settled.previous.instance, settled.previous.version) == (live.instance, live.version)
