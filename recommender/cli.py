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

# Modules that contribute subcommands, in the order --help lists them. Production only: local
# mode has its own entry point, `recommender-local` (local.cli).
COMMAND_MODULES = [
    "recommender.init",
    "modelserver.cli",
    "client.cli",
    "datapublisher.cli",
    "trainer.cli",
    "modelsync.cli",
    "modelpublisher.cli",
    "pipelines.cli",
]
DESCRIPTION = (
    "Streaming recommender: Kafka requests served by TF-Serving models that a Kubeflow pipeline "
    "trains and swaps without losing a request. Configuration comes from environment variables; "
    "see README.md."
)


def build_parser(
    prog: str = "recommender", description: str = DESCRIPTION, modules: list[str] = COMMAND_MODULES
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in modules:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse `argv`, run the chosen command's handler; a known failure ends in one line."""
    args = parser.parse_args(argv)
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
