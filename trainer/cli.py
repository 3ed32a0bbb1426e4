"""`recommender trainer run`: train on the current snapshot, export, upload to the idle instance."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from pydantic import Field

from common.cli import OrderedGroup, settings_options
from common.settings import Settings
from common.snapshots import NoSnapshotError, read_current_snapshot
from common.storage import ObjectStore
from modelpublisher.publisher import PublishError
from trainer.config import TrainConfig
from trainer.upload import upload_export

DEFAULTS = TrainConfig()


class TrainerSettings(Settings):
    trainer_epochs: int = Field(DEFAULTS.epochs, ge=1, description="Training epochs.")
    trainer_embedding_dim: int = Field(DEFAULTS.embedding_dim, ge=1, description="Embedding size.")
    trainer_batch_size: int = Field(DEFAULTS.batch_size, ge=1, description="Batch size.")
    trainer_learning_rate: float = Field(DEFAULTS.learning_rate, gt=0, description="Adam learning rate.")


command = OrderedGroup(
    "trainer",
    short_help="train the collaborative filter and export it for TF-Serving",
    help="Train a Keras collaborative filter on the current snapshot (data/current.json).",
)


@command.command(
    "run",
    short_help="train, evaluate, export and upload to the idle serving instance",
    help="Train on the current snapshot (softmax over the catalogue, early stopping), evaluate HR@10/NDCG@10 "
    "by leave-one-out "
    "full ranking against a popularity baseline, export a SavedModel (serving_default, recommend, "
    "recommend_with_purchased) and upload it to models/<idle instance>/<version>/ with _COMPLETE written "
    "last.",
)
@settings_options(
    TrainerSettings,
    trainer_epochs="--epochs",
    trainer_embedding_dim="--embedding-dim",
    trainer_batch_size="--batch-size",
    trainer_learning_rate="--learning-rate",
)
@click.option("--seed", type=int, default=DEFAULTS.seed, help="random seed (default 0)")
@click.option(
    "--export-dir",
    type=click.Path(path_type=Path),
    help="also keep the SavedModel here (default: a temporary directory, removed after upload)",
)
@click.option("--no-upload", is_flag=True, help="train and export only; upload nothing")
def run_command(overrides: dict[str, Any], seed: int, export_dir: Path | None, no_upload: bool) -> int:
    settings = TrainerSettings.load(**overrides)
    if no_upload and export_dir is None:
        print("error: --no-upload needs --export-dir (otherwise the export is thrown away)", file=sys.stderr)
        return 2
    config = TrainConfig(
        epochs=settings.trainer_epochs,
        embedding_dim=settings.trainer_embedding_dim,
        batch_size=settings.trainer_batch_size,
        learning_rate=settings.trainer_learning_rate,
        seed=seed,
    )
    store = ObjectStore.from_settings(settings)
    try:
        snapshot = read_current_snapshot(store)
    except NoSnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"snapshot {snapshot.pointer.snapshot_id}: {snapshot.pointer.rows:,} rows", file=sys.stderr)
    # TensorFlow loads only here, so other `recommender` commands start fast.
    from trainer.export import export_saved_model
    from trainer.train import train

    trained = train(snapshot, config)
    m = trained.metrics
    print(
        f"HR@10 {m.hr_at_10:.4f}  NDCG@10 {m.ndcg_at_10:.4f}  |  "
        f"popularity HR@10 {m.popularity_hr_at_10:.4f}  NDCG@10 {m.popularity_ndcg_at_10:.4f}  "
        f"({m.evaluated_users} users, trained in {m.train_seconds} s)"
    )
    with tempfile.TemporaryDirectory(prefix="recommender-export-") as tmp:
        export = export_dir or Path(tmp) / "export"
        export_saved_model(trained, export)
        print(f"exported SavedModel to {export}", file=sys.stderr)
        if no_upload:
            return 0
        try:
            instance, version = upload_export(store, export)
        except PublishError as exc:  # a pending publish that model-updates cannot settle
            print(f"error: not uploaded: {exc}", file=sys.stderr)
            return 1
    print(
        f"uploaded model to {settings.minio_bucket}/models/{instance}/{version}/ "
        f"(instance {instance}, version {version})"
    )
    return 0
