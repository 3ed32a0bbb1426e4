"""`recommender modelpublisher publish|rollback`: announce a gated, served, canaried model."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from common.cli import OrderedGroup
from common.errors import first_line
from common.schemas import ModelUpdate
from common.storage import ObjectStore, idle_instance
from modelpublisher.publisher import (
    ModelPublisherSettings,
    PublishError,
    newest_complete_version,
    publish,
    rollback,
    settle_pending,
)

command = OrderedGroup(
    "modelpublisher",
    short_help="publish a model version once it is gated, served and canaried; or roll back",
    help="publish: check the quality gate (beat popularity by PUBLISHER_MARGIN, stay within "
    "PUBLISHER_TOLERANCE of the live model), wait (up to PUBLISHER_LOAD_DEADLINE_SECONDS) until the "
    "instance reports the version AVAILABLE, run a `recommend` canary for known users, then write "
    "models/serving.json (pending), the model update on TOPIC_MODEL_UPDATES, then the final serving.json. "
    "A publish cut short is settled first from TOPIC_MODEL_UPDATES. rollback: re-publish the previous "
    "model. Any failure exits 1 with a one-line reason and changes nothing (an unconfirmed delivery stays "
    "pending for the next run to settle).",
)


@command.command(
    "publish",
    short_help="publish one exported version",
    help="Publish one exported version after the quality gate, the load wait and the canary.",
)
@click.option(
    "--instance",
    type=click.Choice(["a", "b"]),
    help="instance that serves it (default: the idle one, from serving.json)",
)
@click.option("--version", type=int, help="model version (default: the instance's newest complete one)")
def publish_command(instance: str | None, version: int | None) -> int:
    settings = ModelPublisherSettings.load()

    def publish_one() -> ModelUpdate:
        store = ObjectStore.from_settings(settings)
        settle_pending(settings, store)  # a publish cut short decides which instance is idle
        chosen = instance or idle_instance(store)
        return publish(settings, chosen, version or newest_complete_version(store, chosen))

    return _report(publish_one)


@command.command(
    "rollback",
    short_help="re-publish the previous good model",
    help="Re-publish the model that serving.json's `previous` names, once its instance still serves it "
    "and it passes the canary.",
)
def rollback_command() -> int:
    settings = ModelPublisherSettings.load()
    return _report(lambda: rollback(settings))


def _report(action: Callable[[], ModelUpdate]) -> int:
    """Run a publish or a rollback; any failure is one line and exit 1."""
    try:
        update = action()
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # e.g. MinIO unreachable: still one line, still nothing changed
        print(f"error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1
    print(f"published {update.model} version {update.version} on instance {update.instance} ({update.url})")
    return 0
