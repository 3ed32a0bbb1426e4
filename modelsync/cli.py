"""`recommender modelsync`: the sidecar that feeds a serving instance its model versions."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from common.storage import ObjectStore
from modelsync.sync import ModelSync, ModelSyncSettings

log = logging.getLogger(__name__)


@click.command(
    "modelsync",
    short_help="mirror complete model versions of one instance from MinIO to a local model base path",
    help="Watch models/<instance>/ in MinIO and mirror every complete version (its _COMPLETE marker "
    "present) to <model-base-path>/<MODEL_NAME>/<version>/, TF-Serving's layout, through a temporary "
    "directory and an atomic rename. Keeps the newest MODELSYNC_KEEP_VERSIONS (2) versions, looks every "
    "MODELSYNC_POLL_SECONDS (5) and backs off up to MODELSYNC_MAX_BACKOFF_SECONDS (60) while MinIO is "
    "unreachable.",
)
@click.option("--instance", type=click.Choice(["a", "b"]), required=True, help="serving instance to mirror")
@click.option(
    "--model-base-path",
    type=click.Path(path_type=Path),
    required=True,
    help="local folder; versions go to DIR/<MODEL_NAME>/",
)
@click.option("--once", is_flag=True, help="sync one time and exit (non-zero on failure)")
def command(instance: str, model_base_path: Path, once: bool) -> int:
    settings = ModelSyncSettings.load()
    sync = ModelSync(
        ObjectStore.from_settings(settings),
        instance,
        model_base_path / settings.model_name,
        keep=settings.modelsync_keep_versions,
    )
    if once:
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
