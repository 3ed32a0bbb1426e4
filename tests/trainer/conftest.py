"""One small model trained once per session: generated data -> MinIO snapshot -> train -> export -> upload."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import tensorflow as tf

from common.settings import Settings
from common.snapshots import Snapshot, read_current_snapshot
from common.storage import ObjectStore, model_version_prefix
from datapublisher.generate import generate_purchases
from datapublisher.snapshots import publish_snapshot
from trainer.config import TrainConfig
from trainer.export import export_saved_model
from trainer.train import TrainedModel, train
from trainer.upload import upload_export

SMALL = dict(users=2000, products=300, purchases=40_000)  # the generator's "small" preset
FAST = TrainConfig()  # the defaults: they train the small preset in about a second


@dataclass
class Exported:
    store: ObjectStore
    snapshot: Snapshot
    trained: TrainedModel
    export_dir: Path
    instance: str
    version: int
    loaded: tf.Module  # the model as downloaded back from MinIO and loaded


def module_store(stack_info) -> ObjectStore:
    """A store on the session's MinIO with a bucket of its own (the `settings` fixture is per test)."""
    env = stack_info.env()
    settings = Settings.load(
        minio_endpoint=env["MINIO_ENDPOINT"],
        minio_access_key=env["MINIO_ACCESS_KEY"],
        minio_secret_key=env["MINIO_SECRET_KEY"],
        minio_bucket=f"test-{uuid.uuid4().hex[:8]}",
    )
    return ObjectStore.from_settings(settings)


@pytest.fixture(scope="session")
def exported(stack_info, tmp_path_factory) -> Exported:
    store = module_store(stack_info)
    publish_snapshot(store, generate_purchases(**SMALL, seed=11))
    snapshot = read_current_snapshot(store)
    trained = train(snapshot, FAST, verbose=0)
    export_dir = export_saved_model(trained, tmp_path_factory.mktemp("export") / "model")
    instance, version = upload_export(store, export_dir)
    downloaded = tmp_path_factory.mktemp("download")
    store.download_prefix(model_version_prefix(instance, version), downloaded)
    return Exported(
        store, snapshot, trained, export_dir, instance, version, tf.saved_model.load(str(downloaded))
    )
