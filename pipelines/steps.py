"""What each pipeline component does, as plain functions (the KFP components are thin shells).

Parameters arrive as pipeline arguments; they are put into the environment so each step
reads them through the same typed settings as the command-line tools. Credentials are not
parameters: they come from the environment (a Kubernetes Secret in a cluster).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from common.schemas import ModelMetrics, ServingRecord
from common.settings import Settings
from common.storage import EXPORT_METADATA, SERVING_RECORD, ObjectStore

log = logging.getLogger(__name__)


def _store(minio_endpoint: str, minio_bucket: str, minio_secure: bool) -> ObjectStore:
    os.environ.update(
        MINIO_ENDPOINT=minio_endpoint, MINIO_BUCKET=minio_bucket, MINIO_SECURE=str(minio_secure).lower()
    )
    return ObjectStore.from_settings(Settings.load())


def prepare_data_step(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    publish_new_data: bool,
    users: int,
    products: int,
    purchases: int,
    seed: int,
    keep_snapshots: int,
) -> str:
    from common.snapshots import read_current_snapshot
    from datapublisher.generate import generate_purchases
    from datapublisher.snapshots import publish_snapshot

    store = _store(minio_endpoint, minio_bucket, minio_secure)
    if publish_new_data:
        store.ensure_bucket()
        pointer = publish_snapshot(
            store, generate_purchases(users, products, purchases, seed), keep_snapshots
        )
        print(f"published snapshot {pointer.snapshot_id}: {pointer.rows:,} rows")
        return pointer.snapshot_id
    pointer = read_current_snapshot(store).pointer
    print(f"using the current snapshot {pointer.snapshot_id}: {pointer.rows:,} rows")
    return pointer.snapshot_id


def train_step(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    snapshot_id: str,
    epochs: int,
    embedding_dim: int,
    batch_size: int,
    learning_rate: float,
    mlp_units: int,
    model_dir: str,
) -> dict:
    """Train and export into `model_dir`; return metadata for the Model artifact."""
    from common.snapshots import read_current_snapshot
    from trainer.export import export_saved_model
    from trainer.train import TrainConfig, train

    snapshot = read_current_snapshot(_store(minio_endpoint, minio_bucket, minio_secure))
    if snapshot.pointer.snapshot_id != snapshot_id:
        # A publish landed between the steps: train on what is current now, and say so.
        log.warning("snapshot moved from %s to %s; training on the current one", snapshot_id,
                    snapshot.pointer.snapshot_id)  # fmt: skip
    config = TrainConfig(
        epochs=epochs, embedding_dim=embedding_dim, batch_size=batch_size,
        learning_rate=learning_rate, mlp_units=mlp_units,
    )  # fmt: skip
    trained = train(snapshot, config, verbose=2)
    shutil.rmtree(model_dir, ignore_errors=True)
    export_saved_model(trained, Path(model_dir))
    return {"snapshot_id": trained.snapshot_id, **trained.metrics.model_dump()}


def export_metrics(model_dir: str) -> ModelMetrics:
    metadata = json.loads((Path(model_dir) / EXPORT_METADATA).read_text())
    return ModelMetrics.model_validate(metadata["metrics"])


def evaluate_step(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    gate_margin: float,
    gate_tolerance: float,
    model_dir: str,
) -> tuple[bool, str, dict[str, float], str]:
    """The gate decision, the figures for the KFP Metrics artifact and a Markdown report."""
    from modelpublisher.gate import check_quality

    store = _store(minio_endpoint, minio_bucket, minio_secure)
    candidate = export_metrics(model_dir)
    live = store.get_model(SERVING_RECORD, ServingRecord)
    decision = check_quality(candidate, live.metrics if live else None, gate_margin, gate_tolerance)
    figures = {
        "hr_at_10": candidate.hr_at_10,
        "ndcg_at_10": candidate.ndcg_at_10,
        "popularity_hr_at_10": candidate.popularity_hr_at_10,
        "popularity_ndcg_at_10": candidate.popularity_ndcg_at_10,
        "gate_passed": 1.0 if decision.passed else 0.0,
    }
    if live is not None:
        figures |= {"live_hr_at_10": live.metrics.hr_at_10, "live_ndcg_at_10": live.metrics.ndcg_at_10}
    verdict = (
        "PASSED: the model will be exported and published"
        if decision.passed
        else ("FAILED: export and publish are skipped; the live model stays")
    )
    live_line = f"instance {live.instance} version {live.version}" if live else "none yet"
    if live is not None and live.pending is not None:
        live_line += " (its publish is pending: the export step settles it)"
    markdown = "\n".join(
        [
            f"## Quality gate {verdict}",
            "",
            decision.reason,
            "",
            "| figure | candidate | popularity | live |",
            "|---|---|---|---|",
            f"| HR@10 | {candidate.hr_at_10:.4f} | {candidate.popularity_hr_at_10:.4f} | "
            f"{live.metrics.hr_at_10 if live else float('nan'):.4f} |",
            f"| NDCG@10 | {candidate.ndcg_at_10:.4f} | {candidate.popularity_ndcg_at_10:.4f} | "
            f"{live.metrics.ndcg_at_10 if live else float('nan'):.4f} |",
            "",
            f"Live model: {live_line}.",
        ]
    )
    print(f"quality gate: {decision.reason}")
    return decision.passed, decision.reason, figures, markdown


def export_step(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    kafka_bootstrap_servers: str,
    topic_model_updates: str,
    model_dir: str,
) -> tuple[str, int]:
    """Upload to the idle instance; Kafka is read only to settle a publish a crash left pending."""
    from trainer.upload import upload_export

    store = _store(minio_endpoint, minio_bucket, minio_secure)
    os.environ.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap_servers, TOPIC_MODEL_UPDATES=topic_model_updates
    )
    instance, version = upload_export(store, Path(model_dir), Settings.load())
    print(f"exported to instance {instance}, version {version}")
    return instance, version


def publish_step(
    minio_endpoint: str,
    minio_bucket: str,
    minio_secure: bool,
    kafka_bootstrap_servers: str,
    topic_model_updates: str,
    model_name: str,
    serving_a_url: str,
    serving_a_grpc: str,
    serving_b_url: str,
    serving_b_grpc: str,
    gate_margin: float,
    gate_tolerance: float,
    instance: str,
    version: int,
) -> str:
    """Publish through the model publisher; return the model update as JSON."""
    from modelpublisher.publisher import ModelPublisherSettings, publish

    _store(minio_endpoint, minio_bucket, minio_secure)
    os.environ.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap_servers,
        TOPIC_MODEL_UPDATES=topic_model_updates,
        MODEL_NAME=model_name,
        SERVING_A_URL=serving_a_url,
        SERVING_A_GRPC=serving_a_grpc,
        SERVING_B_URL=serving_b_url,
        SERVING_B_GRPC=serving_b_grpc,
        PUBLISHER_MARGIN=str(gate_margin),
        PUBLISHER_TOLERANCE=str(gate_tolerance),
    )
    update = publish(ModelPublisherSettings.load(), instance, version)
    print(f"published {update.model} instance {update.instance} version {update.version}")
    return update.model_dump_json()
