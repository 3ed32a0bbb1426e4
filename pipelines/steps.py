"""What each pipeline component does, as plain functions (the KFP components are thin shells).

Each step takes the run's `PipelineConfig` and builds the settings of the code it calls from it,
explicitly (`SettingsClass.load(**fields)`). Credentials are not parameters: the settings read
them from the environment (a Kubernetes Secret in a cluster), as they read TLS/SASL variables.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from common.schemas import ModelMetrics, ServingRecord
from common.settings import Settings
from common.storage import EXPORT_METADATA, SERVING_RECORD, ObjectStore
from pipelines.config import PipelineConfig

log = logging.getLogger(__name__)


def _storage(config: PipelineConfig) -> dict[str, Any]:
    return {
        "minio_endpoint": config.minio_endpoint,
        "minio_bucket": config.minio_bucket,
        "minio_secure": config.minio_secure,
    }


def _kafka(config: PipelineConfig) -> dict[str, Any]:
    """The Kafka cluster and topic; other librdkafka properties (TLS/SASL) stay with `KAFKA_*`."""
    return {
        "kafka_properties": {"bootstrap.servers": config.kafka_bootstrap_servers},
        "topic_model_updates": config.topic_model_updates,
    }


def _store(config: PipelineConfig) -> ObjectStore:
    return ObjectStore.from_settings(Settings.load(**_storage(config)))


def prepare_data_step(config: PipelineConfig) -> str:
    from common.snapshots import read_current_snapshot
    from datapublisher.generate import generate_purchases
    from datapublisher.snapshots import publish_snapshot

    store = _store(config)
    if config.publish_new_data:
        store.ensure_bucket()
        purchases = generate_purchases(
            config.data_users, config.data_products, config.data_purchases, config.data_seed
        )
        pointer = publish_snapshot(store, purchases, config.keep_snapshots)
        print(f"published snapshot {pointer.snapshot_id}: {pointer.rows:,} rows")
        return pointer.snapshot_id
    pointer = read_current_snapshot(store).pointer
    print(f"using the current snapshot {pointer.snapshot_id}: {pointer.rows:,} rows")
    return pointer.snapshot_id


def train_step(config: PipelineConfig, snapshot_id: str, model_dir: str) -> dict:
    """Train and export into `model_dir`; return metadata for the Model artifact."""
    from common.snapshots import read_current_snapshot
    from trainer.export import export_saved_model
    from trainer.train import train

    snapshot = read_current_snapshot(_store(config))
    if snapshot.pointer.snapshot_id != snapshot_id:
        # A publish landed between the steps: train on what is current now, and say so.
        log.warning("snapshot moved from %s to %s; training on the current one", snapshot_id,
                    snapshot.pointer.snapshot_id)  # fmt: skip
    trained = train(snapshot, config.train_config(), verbose=2)
    shutil.rmtree(model_dir, ignore_errors=True)
    export_saved_model(trained, Path(model_dir))
    return {"snapshot_id": trained.snapshot_id, **trained.metrics.model_dump()}


def export_metrics(model_dir: str) -> ModelMetrics:
    metadata = json.loads((Path(model_dir) / EXPORT_METADATA).read_text())
    return ModelMetrics.model_validate(metadata["metrics"])


def evaluate_step(config: PipelineConfig, model_dir: str) -> tuple[bool, str, dict[str, float], str]:
    """The gate decision, the figures for the KFP Metrics artifact and a Markdown report."""
    from modelpublisher.gate import check_quality

    store = _store(config)
    candidate = export_metrics(model_dir)
    live = store.get_model(SERVING_RECORD, ServingRecord)
    decision = check_quality(
        candidate, live.metrics if live else None, config.gate_margin, config.gate_tolerance
    )
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


def export_step(config: PipelineConfig, model_dir: str) -> tuple[str, int]:
    """Upload to the idle instance; Kafka is read only to settle a publish a crash left pending."""
    from trainer.upload import upload_export

    settings = Settings.load(**_storage(config), **_kafka(config))
    instance, version = upload_export(ObjectStore.from_settings(settings), Path(model_dir), settings)
    print(f"exported to instance {instance}, version {version}")
    return instance, version


def publish_step(config: PipelineConfig, instance: str, version: int) -> str:
    """Publish through the model publisher; return the model update as JSON."""
    from modelpublisher.publisher import ModelPublisherSettings, publish

    settings = ModelPublisherSettings.load(
        **_storage(config),
        **_kafka(config),
        model_name=config.model_name,
        serving_a_url=config.serving_a_url,
        serving_a_grpc=config.serving_a_grpc,
        serving_b_url=config.serving_b_url,
        serving_b_grpc=config.serving_b_grpc,
        # The publisher's own gate re-checks with the pipeline's figures.
        publisher_margin=config.gate_margin,
        publisher_tolerance=config.gate_tolerance,
    )
    update = publish(settings, instance, version)
    print(f"published {update.model} instance {update.instance} version {update.version}")
    return update.model_dump_json()
