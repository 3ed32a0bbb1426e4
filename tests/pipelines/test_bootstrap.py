"""`recommender pipeline bootstrap` on the real stack: what the chart's Job does on install and upgrade.

With a model live it trains nothing and publishes no data; on an empty bucket it publishes data,
runs the pipeline (two local serving instances and a model server, as in test_local_run.py) and
leaves a version on both instances, so both serving pods could become ready.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest
from confluent_kafka import TopicPartition

from common.kafka import ensure_topics, make_consumer, make_producer
from common.schemas import ModelMetrics, ModelUpdate, ServingRecord
from common.settings import ServingSettings, Settings
from common.storage import CURRENT_SNAPSHOT, SERVING_RECORD, ObjectStore
from datapublisher.generate import PRESETS
from modelpublisher.publisher import wait_available
from recommender.cli import main
from tests.deploy.conftest import IMAGE_REPOSITORY, REQUIRED_SET, by_kind_name, render_release
from tests.deploy.conftest import write_configmap_volume as mount_configmap
from tests.deploy.helm import helm_binary
from tests.pipelines.test_local_run import _reply_model
from trainer.config import TrainConfig

METRICS = ModelMetrics(hr_at_10=0.3, ndcg_at_10=0.2, popularity_hr_at_10=0.2, popularity_ndcg_at_10=0.1)


def _chart_parameter_keys() -> set[str]:
    """The keys of the chart's pipeline ConfigMap, which the Job mounts."""
    manifests = render_release(helm_binary(), "rel", "recs", *REQUIRED_SET)
    return set(by_kind_name(manifests)[("ConfigMap", "rel-streaming-recommender-pipeline")]["data"])


def _parameters(settings: Settings, serving: dict[str, str]) -> dict[str, str]:
    """What the chart's pipeline ConfigMap holds, for the local stack (the chart's keys, as text)."""
    data = {
        "image": f"{IMAGE_REPOSITORY}:0.1.0",
        "minio_endpoint": settings.minio_endpoint,
        "minio_bucket": settings.minio_bucket,
        "minio_secure": str(settings.minio_secure).lower(),
        "minio_secret": "rel-streaming-recommender-minio",
        "kafka_bootstrap_servers": settings.kafka["bootstrap.servers"],
        "topic_model_updates": settings.topic_model_updates,
        "model_name": "recommender",
        **serving,
    }
    assert set(data) == _chart_parameter_keys()
    return data


def _objects(store: ObjectStore) -> dict[str, str]:
    """Every object in the bucket with a digest of its bytes."""
    return {key: hashlib.sha256(store.get_bytes(key) or b"").hexdigest() for key in store.list_keys("")}


def _updates_on_topic(settings: Settings) -> int:
    consumer = make_consumer(settings, "bootstrap-count")
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(settings.topic_model_updates, 0), timeout=10)
        return high
    finally:
        consumer.close()


def _put_version(store: ObjectStore, instance: str, version: int) -> None:
    prefix = f"models/{instance}/{version}/"
    store.put_bytes(prefix + "saved_model.pb", f"graph {instance}{version}".encode())
    store.put_bytes(prefix + "variables/variables.index", b"index")
    store.put_bytes(prefix + "assets.extra/metadata.json", METRICS.model_dump_json().encode())
    store.put_bytes(prefix + "_COMPLETE", b"")


def _live(instance: str, version: int, **fields) -> ServingRecord:
    return ServingRecord.model_validate(
        {"model": "recommender", "instance": instance, "version": version, "published_at": 1,
         "metrics": METRICS, **fields}
    )  # fmt: skip


@pytest.fixture
def live_world(stack_env: dict[str, str], tmp_path: Path) -> dict:
    """An empty bucket (each test puts its models), no topics yet, the release's parameters mounted."""
    settings = Settings.load()
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket()
    # Nothing here trains or publishes, so no instance is called: the addresses answer nothing.
    serving = {"serving_a_url": "http://127.0.0.1:1", "serving_a_grpc": "127.0.0.1:1",
               "serving_b_url": "http://127.0.0.1:2", "serving_b_grpc": "127.0.0.1:2"}  # fmt: skip
    params = mount_configmap(tmp_path / "pipeline", _parameters(settings, serving))
    return {"settings": settings, "store": store, "params": params}


def test_with_a_model_live_it_trains_nothing_and_publishes_no_data(live_world: dict, capsys) -> None:
    store, settings = live_world["store"], live_world["settings"]
    _put_version(store, "a", 100)
    _put_version(store, "b", 99)
    store.put_model(SERVING_RECORD, _live("a", 100))
    before = _objects(store)

    assert main(["pipeline", "bootstrap", "--params-from", str(live_world["params"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "bootstrap: instance a version 100 is live: nothing to train"
    assert _objects(store) == before  # no snapshot, no new version, serving.json as it was
    assert store.get_bytes(CURRENT_SNAPSHOT) is None
    # ... and it made the topics the model server's init container would have made.
    assert ensure_topics(settings) == []
    assert _updates_on_topic(settings) == 0


def test_a_pending_publish_is_settled_first_then_nothing_is_trained(live_world: dict, capsys) -> None:
    store, settings = live_world["store"], live_world["settings"]
    _put_version(store, "a", 100)
    _put_version(store, "b", 99)
    update = ModelUpdate(model="recommender", instance="a", url="http://127.0.0.1:1", grpc="127.0.0.1:1",
                         version=100, published_at=5, metrics=METRICS)  # fmt: skip
    store.put_model(SERVING_RECORD, _live("a", 100, published_at=5, pending=update))
    # The crash came after the update went out: the topic names the pending model.
    ensure_topics(settings)
    producer = make_producer(settings)
    producer.produce(settings.topic_model_updates, key=b"recommender", value=update.to_bytes())
    assert producer.flush(10) == 0
    models_before = sorted(store.list_keys("models/"))

    assert main(["pipeline", "bootstrap", "--params-from", str(live_world["params"])]) == 0
    settled = store.get_model(SERVING_RECORD, ServingRecord)
    assert settled == _live("a", 100, published_at=5)
    assert (
        capsys.readouterr().out.splitlines()[-1].endswith("instance a version 100 is live: nothing to train")
    )
    assert sorted(store.list_keys("models/")) == models_before
    assert not list(store.list_keys("data/"))


def test_an_idle_instance_without_a_version_gets_an_unannounced_copy_of_the_live_model(
    live_world: dict, capsys
) -> None:
    store, settings = live_world["store"], live_world["settings"]
    _put_version(store, "a", 100)
    store.put_model(SERVING_RECORD, _live("a", 100))
    live_files = {k.removeprefix("models/a/100/"): v for k, v in _objects(store).items() if "/a/" in k}

    assert main(["pipeline", "bootstrap", "--params-from", str(live_world["params"])]) == 0
    [version] = store.model_versions("b")
    assert version > 100
    copied = {k.removeprefix(f"models/b/{version}/"): v for k, v in _objects(store).items() if "/b/" in k}
    assert copied == live_files
    assert store.get_model(SERVING_RECORD, ServingRecord) == _live("a", 100)  # still a, not announced
    assert _updates_on_topic(settings) == 0
    assert not list(store.list_keys("data/"))
    assert f"idle instance b as version {version} (not announced)" in capsys.readouterr().out


def test_parameters_pointing_elsewhere_are_refused_and_nothing_is_written(
    live_world: dict, tmp_path: Path, capsys
) -> None:
    store = live_world["store"]
    data = {p.name: p.read_text() for p in live_world["params"].iterdir() if not p.name.startswith("..")}
    other = mount_configmap(tmp_path / "other", data | {"minio_bucket": "someone-elses"})

    assert main(["pipeline", "bootstrap", "--params-from", str(other)]) == 1
    [error] = capsys.readouterr().err.splitlines()
    assert error.startswith("error: the release's parameters and this environment point at different places")
    assert "minio_bucket: 'someone-elses'" in error
    assert not list(store.list_keys(""))


def test_on_an_empty_bucket_it_publishes_data_trains_and_both_instances_get_a_version(
    world,
    tmp_path: Path,
    capsys,
) -> None:
    settings, store = world["settings"], world["store"]
    serving = ServingSettings.load()  # the world put the instances' addresses in the environment
    addresses = {f"serving_{i}_{kind}": getattr(serving, f"serving_{i}_{kind}")
                 for i in ("a", "b") for kind in ("url", "grpc")}  # fmt: skip
    params = mount_configmap(tmp_path / "pipeline", _parameters(settings, addresses))
    assert not list(store.list_keys(""))

    assert main(["pipeline", "bootstrap", "--params-from", str(params)]) == 0
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("bootstrap: ")]
    pointer = store.get_json(CURRENT_SNAPSHOT)
    assert pointer is not None and pointer["rows"] == PRESETS["small"].purchases
    record = store.get_model(SERVING_RECORD, ServingRecord)
    assert record is not None and record.instance == "a" and record.pending is None
    # The run used the trainer's defaults, as for any data (the export's metadata records them).
    config = store.get_json(f"models/a/{record.version}/assets.extra/metadata.json")["config"]
    assert config == asdict(TrainConfig())
    # The idle instance got a copy, and loads it: what its pod's readiness probe waits for.
    [standby] = store.model_versions("b")
    with httpx.Client(timeout=5) as client:
        wait_available(client, serving.serving_b_url, "recommender", standby, deadline_seconds=60)
    # One line per step, in order.
    steps = [
        f"bootstrap: bucket {settings.minio_bucket} ready; topics created: ",
        "bootstrap: no live model yet",
        "bootstrap: no current snapshot: published generated data (small preset)",
        "bootstrap: running the pipeline locally",
        "bootstrap: pipeline run finished in ",
        f"bootstrap: copied the live model to the idle instance b as version {standby} (not announced)",
    ]
    assert all(line.startswith(step) for line, step in zip(out, steps, strict=True)), out
    assert out[4].endswith(f"instance a version {record.version} is live")
    # The model server answers from the live model: what `helm test` checks.
    assert _reply_model(settings, record.version) == ("a", record.version)

    # An upgrade runs the Job again: nothing is trained, nothing is written.
    before = _objects(store)
    assert main(["pipeline", "bootstrap", "--params-from", str(params)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"bootstrap: instance a version {record.version} is live: nothing to train"
    )
    assert _objects(store) == before
