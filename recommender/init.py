"""`recommender init`: create the bucket and the topics (idempotent; the compose/Helm init job)."""

from __future__ import annotations

import logging

import click
from pydantic import Field

from common.kafka import ensure_topics
from common.settings import Settings
from common.storage import ObjectStore

log = logging.getLogger(__name__)


class InitSettings(Settings):
    topic_partitions: int = Field(2, ge=1, le=1000, description="Partitions of requests and replies.")
    topic_replication_factor: int = Field(1, ge=1, le=10, description="Replication factor of new topics.")


@click.command(
    "init",
    short_help="create the MinIO bucket and the Kafka topics if missing",
    help="Create the bucket (MINIO_BUCKET) and the four topics (TOPIC_*), with TOPIC_PARTITIONS "
    "partitions for requests and replies and model-updates compacted. Existing ones are left as they are.",
)
def command() -> int:
    settings = InitSettings.load()
    ObjectStore.from_settings(settings).ensure_bucket()
    created = ensure_topics(settings, settings.topic_partitions, settings.topic_replication_factor)
    print(
        f"bucket {settings.minio_bucket} ready; topics created: {', '.join(created) or 'none (all existed)'}"
    )
    return 0
