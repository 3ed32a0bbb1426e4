"""`recommender modelserver`: serve Kafka recommendation requests from the live TF-Serving instance."""

from __future__ import annotations

from typing import Any

import click

from common.cli import settings_options
from modelserver.settings import ModelServerSettings


@click.command(
    "modelserver",
    short_help="answer Kafka recommendation requests in batches from the live serving instance",
    help="Consume TOPIC_REQUESTS in the consumer group MODELSERVER_GROUP_ID (run more replicas to scale "
    "across partitions), learn the live model from the compacted TOPIC_MODEL_UPDATES, call that instance "
    "in micro-batches (gRPC or REST) and produce replies on TOPIC_REPLIES; bad or unservable requests go "
    "to TOPIC_DLQ. Offsets are stored only after the replies are acknowledged (at-least-once). HTTP: "
    "/healthz /readyz /state /history /metrics and POST /recommend. Flags override the MODELSERVER_* "
    "variables.",
)
@settings_options(
    ModelServerSettings,
    modelserver_protocol="--protocol",
    modelserver_max_batch="--max-batch",
    modelserver_max_wait_ms="--max-wait-ms",
    modelserver_http_port="--port",
)
def command(overrides: dict[str, Any]) -> int:
    settings = ModelServerSettings.load(**overrides)
    from modelserver.loop import ModelServer  # after validation: a bad variable fails fast

    return ModelServer(settings).run()
