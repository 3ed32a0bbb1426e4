"""Entry point of the `recommender` command.

Each component module exposes `register(subparsers)`, which adds its subcommand and sets
a `handler(args) -> int`. Configuration errors end in one readable line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import urllib3
from confluent_kafka import KafkaError, KafkaException
from minio.error import MinioException

from common.errors import first_line
from common.settings import ConfigError

# Modules that contribute subcommands, in the order --help lists them.
COMMAND_MODULES = [
    "localstack.cli",
    "recommender.init",
    "modelserver.cli",
    "client.cli",
    "datapublisher.cli",
    "trainer.cli",
    "modelsync.cli",
    "tfserving.cli",
    "modelpublisher.cli",
    "pipelines.cli",
    "recommender.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recommender",
        description="Streaming recommender: Kafka requests served by TF-Serving models that a "
        "Kubeflow pipeline trains and swaps without losing a request. Configuration comes from "
        "environment variables; see README.md.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (MinioException, urllib3.exceptions.HTTPError) as exc:
        # Storage down or refusing: one line naming it, not a traceback. Nothing half-written is
        # ever visible (pointers are single PUTs, model versions need their completion marker).
        print(f"error: object storage failed: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1
    except KafkaException as exc:
        # E.g. a refused SASL login or an untrusted broker certificate: librdkafka retries until the
        # caller's timeout, then reports only "transport failure"; its log lines above give the cause.
        error = exc.args[0] if exc.args else exc
        reason = f"{error.name()}: {error.str()}" if isinstance(error, KafkaError) else str(error)
        print(f"error: Kafka failed: {reason} (the librdkafka log above names the cause)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
