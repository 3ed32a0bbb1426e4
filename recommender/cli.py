"""Entry point of the `recommender` command.

Each component module exposes `command`, a click command or group returning the exit code.
Configuration errors end in one readable line and exit code 2.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click
import urllib3
from confluent_kafka import KafkaError, KafkaException
from minio.error import MinioException

from common.cli import OrderedGroup
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
# `-h` as well as `--help`; help as wide as the terminal allows, up to the code's line length.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def build_group(
    name: str = "recommender", description: str = DESCRIPTION, modules: list[str] = COMMAND_MODULES
) -> click.Group:
    group = OrderedGroup(name, help=description, context_settings=CONTEXT)
    for module in modules:
        group.add_command(importlib.import_module(module).command)
    return group


def main(argv: list[str] | None = None) -> int:
    return run(build_group(), argv)


def run(group: click.Group, argv: list[str] | None = None) -> int:
    """Parse `argv`, run the chosen command; a known failure ends in one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Not standalone: the command's return value is the exit code, and errors reach the handlers below.
        return group.main(argv, prog_name=group.name, standalone_mode=False)
    except click.ClickException as exc:  # a usage error: click's message, exit 2
        exc.show()
        return exc.exit_code
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
    except click.Abort:  # click's form of KeyboardInterrupt
        return 130


if __name__ == "__main__":
    sys.exit(main())
