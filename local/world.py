"""Pieces of a local serving world that the tests and the bench both set up on one stack.

Each run gets topics (and a model-server group) of its own, so runs on the same stack never see
each other's requests, replies or model updates; and a model update can be announced by hand,
as the publisher's announcement would (`ServingInstance.model_update` makes one).
"""

from __future__ import annotations

import uuid

from common.kafka import make_producer
from common.schemas import ModelUpdate
from common.settings import Settings


def fresh_topics() -> dict[str, str]:
    """Variables naming new topics and a new model-server consumer group (created by whoever uses them)."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "TOPIC_REQUESTS": f"requests-{suffix}",
        "TOPIC_REPLIES": f"replies-{suffix}",
        "TOPIC_DLQ": f"dlq-{suffix}",
        "TOPIC_MODEL_UPDATES": f"model-updates-{suffix}",
        "MODELSERVER_GROUP_ID": f"modelserver-{suffix}",
    }


def announce(settings: Settings, update: ModelUpdate, timeout: float = 30.0) -> None:
    """Produce `update` on the model-updates topic, keyed by the model as the publisher keys it."""
    producer = make_producer(settings)
    producer.produce(settings.topic_model_updates, key=update.model.encode(), value=update.to_bytes())
    if producer.flush(timeout) != 0:
        raise RuntimeError(f"the model update was not acknowledged within {timeout:g}s")
