"""`recommender trainer run`: train on the current snapshot, export, upload to the idle instance."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pydantic import Field

from common.settings import Settings
from common.snapshots import NoSnapshotError, read_current_snapshot
from common.storage import ObjectStore
from modelpublisher.publisher import PublishError
from trainer.config import TrainConfig
from trainer.upload import upload_export

DEFAULTS = TrainConfig()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0 (got {text})")
    return value


class TrainerSettings(Settings):
    trainer_epochs: int = Field(DEFAULTS.epochs, ge=1, description="Default of --epochs.")
    trainer_embedding_dim: int = Field(
        DEFAULTS.embedding_dim, ge=1, description="Default of --embedding-dim."
    )
    trainer_batch_size: int = Field(DEFAULTS.batch_size, ge=1, description="Default of --batch-size.")
    trainer_learning_rate: float = Field(
        DEFAULTS.learning_rate, gt=0, description="Default of --learning-rate."
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trainer",
        help="train the collaborative filter and export it for TF-Serving",
        description="Train a Keras collaborative filter on the current snapshot (data/current.json).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser(
        "run",
        help="train, evaluate, export and upload to the idle serving instance",
        description="Train on the current snapshot with sampled negatives, evaluate HR@10/NDCG@10 by "
        "leave-one-out full ranking against a popularity baseline, export a SavedModel "
        "(serving_default, recommend, recommend_with_purchased) and upload it to "
        "models/<idle instance>/<version>/ with _COMPLETE written last. Defaults come from "
        "TRAINER_EPOCHS, TRAINER_EMBEDDING_DIM, TRAINER_BATCH_SIZE and TRAINER_LEARNING_RATE.",
    )
    run_parser.add_argument(
        "--epochs", type=_positive_int, help=f"training epochs (default {DEFAULTS.epochs})"
    )
    run_parser.add_argument(
        "--embedding-dim", type=_positive_int, help=f"embedding size (default {DEFAULTS.embedding_dim})"
    )
    run_parser.add_argument(
        "--batch-size", type=_positive_int, help=f"batch size (default {DEFAULTS.batch_size})"
    )
    run_parser.add_argument(
        "--learning-rate", type=_positive_float, help=f"Adam learning rate (default {DEFAULTS.learning_rate})"
    )
    run_parser.add_argument(
        "--negatives",
        type=_positive_int,
        default=DEFAULTS.negatives,
        help=f"sampled negatives per purchase, redrawn each epoch (default {DEFAULTS.negatives})",
    )
    run_parser.add_argument(
        "--mlp",
        type=int,
        default=0,
        metavar="UNITS",
        help="hidden units of an MLP head over the embeddings' product (default 0: plain dot product)",
    )
    run_parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed (default 0)")
    run_parser.add_argument(
        "--export-dir",
        type=Path,
        help="also keep the SavedModel here (default: a temporary directory, removed after upload)",
    )
    run_parser.add_argument("--no-upload", action="store_true", help="train and export only; upload nothing")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = TrainerSettings.load()
    if args.no_upload and args.export_dir is None:
        print("error: --no-upload needs --export-dir (otherwise the export is thrown away)", file=sys.stderr)
        return 2
    config = TrainConfig(
        epochs=args.epochs or settings.trainer_epochs,
        embedding_dim=args.embedding_dim or settings.trainer_embedding_dim,
        batch_size=args.batch_size or settings.trainer_batch_size,
        learning_rate=args.learning_rate or settings.trainer_learning_rate,
        negatives=args.negatives,
        mlp_units=args.mlp,
        seed=args.seed,
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
        export_dir = args.export_dir or Path(tmp) / "export"
        export_saved_model(trained, export_dir)
        print(f"exported SavedModel to {export_dir}", file=sys.stderr)
        if args.no_upload:
            return 0
        try:
            instance, version = upload_export(store, export_dir)
        except PublishError as exc:  # a pending publish that model-updates cannot settle
            print(f"error: not uploaded: {exc}", file=sys.stderr)
            return 1
    print(
        f"uploaded model to {settings.minio_bucket}/models/{instance}/{version}/ "
        f"(instance {instance}, version {version})"
    )
    return 0
