"""`recommender modelsync`: the sidecar that feeds a serving instance its model versions."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from common.storage import ObjectStore
from modelsync.sync import ModelSync, ModelSyncSettings

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "modelsync",
        help="mirror complete model versions of one instance from MinIO to a local model base path",
        description="Watch models/<instance>/ in MinIO and mirror every complete version (its _COMPLETE "
        "marker present) to <model-base-path>/<MODEL_NAME>/<version>/, TF-Serving's layout, through a "
        "temporary directory and an atomic rename. Keeps the newest MODELSYNC_KEEP_VERSIONS (2) "
        "versions, looks every MODELSYNC_POLL_SECONDS (5) and backs off up to "
        "MODELSYNC_MAX_BACKOFF_SECONDS (60) while MinIO is unreachable.",
    )
    parser.add_argument("--instance", choices=["a", "b"], required=True, help="serving instance to mirror")
    parser.add_argument(
        "--model-base-path", type=Path, required=True, help="local folder; versions go to DIR/<MODEL_NAME>/"
    )
    parser.add_argument("--once", action="store_true", help="sync one time and exit (non-zero on failure)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = ModelSyncSettings.load()
    sync = ModelSync(
        ObjectStore.from_settings(settings),
        args.instance,
        args.model_base_path / settings.model_name,
        keep=settings.modelsync_keep_versions,
    )
    if args.once:
        try:
            result = sync.sync_once()
        except Exception as exc:
            print(f"error: sync failed: {exc}", file=sys.stderr)
            return 1
        print(f"downloaded {result.downloaded or 'nothing'}; removed {result.removed or 'nothing'}")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sync.run(stop, settings.modelsync_poll_seconds, settings.modelsync_max_backoff_seconds)
    return 0
