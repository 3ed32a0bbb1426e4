"""`recommender modelpublisher publish|rollback`: announce a gated, served, canaried model."""

from __future__ import annotations

import argparse
import sys

from common.errors import first_line
from common.storage import ObjectStore, idle_instance
from modelpublisher.publisher import (
    ModelPublisherSettings,
    PublishError,
    newest_complete_version,
    publish,
    rollback,
    settle_pending,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "modelpublisher",
        help="publish a model version once it is gated, served and canaried; or roll back",
        description="publish: check the quality gate (beat popularity by PUBLISHER_MARGIN, stay within "
        "PUBLISHER_TOLERANCE of the live model), wait (up to PUBLISHER_LOAD_DEADLINE_SECONDS) until the "
        "instance reports the version AVAILABLE, run a `recommend` canary for known users, then "
        "write models/serving.json (pending), the model update on TOPIC_MODEL_UPDATES, then the final "
        "serving.json. A publish cut short is settled first from TOPIC_MODEL_UPDATES. rollback: re-publish "
        "the previous model. Any failure exits 1 with a one-line reason and changes nothing (an unconfirmed "
        "delivery stays pending for the next run to settle).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    pub = actions.add_parser(
        "publish",
        help="publish one exported version",
        description="Publish one exported version after the quality gate, the load wait and the canary.",
    )
    pub.add_argument(
        "--instance",
        choices=["a", "b"],
        help="instance that serves it (default: the idle one, from serving.json)",
    )
    pub.add_argument(
        "--version", type=int, help="model version (default: the instance's newest complete one)"
    )
    actions.add_parser(
        "rollback",
        help="re-publish the previous good model",
        description="Re-publish the model that serving.json's `previous` names, once its instance still "
        "serves it and it passes the canary.",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = ModelPublisherSettings.load()
    try:
        if args.action == "rollback":
            update = rollback(settings)
        else:
            store = ObjectStore.from_settings(settings)
            settle_pending(settings, store)  # a publish cut short decides which instance is idle
            instance = args.instance or idle_instance(store)
            version = args.version or newest_complete_version(store, instance)
            update = publish(settings, instance, version)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # e.g. MinIO unreachable: still one line, still nothing changed
        print(f"error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1
    print(f"published {update.model} version {update.version} on instance {update.instance} ({update.url})")
    return 0
