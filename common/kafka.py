"""Kafka client construction and topic set-up, shared by every component.

Client properties start from the `KAFKA_*` pass-through (see common.settings) and each
caller adds only what its role needs, so a secured cluster works without code changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from common.retry import Backoff, poll
from common.settings import Settings

log = logging.getLogger(__name__)

# The largest record any of our producers sends (librdkafka's default, stated so that the
# contract's limits can be checked against it; KAFKA_MESSAGE_MAX_BYTES overrides it). It is below
# the broker's default (1,048,588), so the producer refuses a record before the broker would.
PRODUCER_MAX_MESSAGE_BYTES = 1_000_000

# Delivery errors about the record itself: producing the same bytes again cannot succeed.
RECORD_REFUSALS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # raised by produce() locally and by the broker alike
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError._INVALID_ARG,
        KafkaError._KEY_SERIALIZATION,
        KafkaError._VALUE_SERIALIZATION,
    }
)


def producer_config(settings: Settings, **overrides: str | int | bool) -> dict:
    # Idempotence gives ordered, de-duplicated retries per partition at acks=all.
    config: dict = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.max.bytes": PRODUCER_MAX_MESSAGE_BYTES,
    }
    config.update(settings.kafka)
    config.update(overrides)
    return config


def consumer_config(settings: Settings, group_id: str, **overrides: str | int | bool) -> dict:
    # Offsets are stored by the application only after its reply is acknowledged;
    # librdkafka's background commit then commits just those stored offsets.
    config: dict = {
        "group.id": group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }
    config.update(settings.kafka)
    config.update(overrides)
    return config


def make_producer(settings: Settings, **overrides: str | int | bool) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, **overrides: str | int | bool) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **overrides))


def ensure_topics(
    settings: Settings,
    partitions: int = 2,
    replication_factor: int = 1,
    timeout: float = 30.0,
    extra_config: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the project's topics that do not exist yet; return the names created."""
    admin = AdminClient({**settings.kafka, **(extra_config or {})})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = {
        settings.topic_requests: (partitions, {}),
        settings.topic_replies: (partitions, {}),
        settings.topic_dlq: (1, {}),
        settings.topic_model_updates: (1, {"cleanup.policy": "compact"}),
    }
    new = [
        NewTopic(name, num_partitions=count, replication_factor=replication_factor, config=config)
        for name, (count, config) in wanted.items()
        if name not in existing
    ]
    created = []
    for name, future in admin.create_topics(new, operation_timeout=timeout).items() if new else []:
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    if created:
        _wait_for_leaders(admin, created, timeout)
        log.info("created topics %s", ", ".join(sorted(created)))
    return created


def _wait_for_leaders(admin: AdminClient, topics: list[str], timeout: float) -> None:
    # A created topic's partitions get their leaders a moment later; until then the broker
    # answers NOT_LEADER_FOR_PARTITION, e.g. to the watermark query of a client starting at once.
    waiting = topics

    def led() -> bool:
        nonlocal waiting
        metadata = admin.list_topics(timeout=timeout).topics
        waiting = [
            name
            for name in topics
            if name not in metadata
            or metadata[name].error is not None
            or any(p.leader < 0 or p.error is not None for p in metadata[name].partitions.values())
        ]
        return not waiting

    if not poll(led, Backoff(0.1), timeout):
        raise KafkaException(f"topics without partition leaders after {timeout:g}s: {', '.join(waiting)}")


def refuses_record(err: KafkaError) -> bool:
    """True when Kafka refused the record's content, so only a different record can succeed."""
    return err.code() in RECORD_REFUSALS


def delivery_error(err: KafkaError | None) -> str | None:
    """Text of a delivery failure, for callbacks that record rather than raise."""
    return None if err is None else f"{err.name()}: {err.str()}"
