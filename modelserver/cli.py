"""`recommender modelserver`: serve Kafka recommendation requests from the live TF-Serving instance."""

from __future__ import annotations

import argparse

from modelserver.settings import ModelServerSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "modelserver",
        help="answer Kafka recommendation requests in batches from the live serving instance",
        description="Consume TOPIC_REQUESTS in the consumer group MODELSERVER_GROUP_ID (run more "
        "replicas to scale across partitions), learn the live model from the compacted "
        "TOPIC_MODEL_UPDATES, call that instance in micro-batches (gRPC or REST) and produce replies "
        "on TOPIC_REPLIES; bad or unservable requests go to TOPIC_DLQ. Offsets are stored only after "
        "the replies are acknowledged (at-least-once). HTTP: /healthz /readyz /state /metrics and "
        "POST /recommend. Flags override the MODELSERVER_* variables.",
    )
    parser.add_argument("--protocol", choices=["grpc", "rest"], help="how to call TF-Serving (default grpc)")
    parser.add_argument("--max-batch", type=int, help="most requests per batch (default 512)")
    parser.add_argument(
        "--max-wait-ms", type=int, help="after a batch's first request, how long to wait for more (default 0)"
    )
    parser.add_argument("--port", type=int, help="HTTP port (default 8080)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    overrides = {
        "modelserver_protocol": args.protocol,
        "modelserver_max_batch": args.max_batch,
        "modelserver_max_wait_ms": args.max_wait_ms,
        "modelserver_http_port": args.port,
    }
    settings = ModelServerSettings.load(**{k: v for k, v in overrides.items() if v is not None})
    from modelserver.loop import ModelServer  # after validation: a bad variable fails fast

    return ModelServer(settings).run()
