"""Upload an export to the idle serving instance under a fresh version, completion marker last.

The live instance is the one `models/serving.json` names; before any is live, `a` is the target.
A publish cut short (serving.json `pending`) is settled first from the `model-updates` topic,
which the model servers route by, so the record names the instance they use (see
`modelpublisher.publisher`). Nothing is written or deleted under the live instance's prefix.
The version is epoch seconds, bumped past every version that exists under either instance,
complete or not, so a number is never reused, not even one a crashed upload left half-written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from common.schemas import INSTANCES, Instance
from common.settings import Settings
from common.storage import (
    ObjectStore,
    completion_marker,
    idle_instance,
    model_prefix,
    model_version_prefix,
)
from modelpublisher.publisher import settle_pending

log = logging.getLogger(__name__)


def existing_versions(store: ObjectStore) -> set[int]:
    """Every version number used under any instance, with or without a completion marker."""
    versions = set()
    for instance in INSTANCES:
        prefix = model_prefix(instance)
        for key in store.list_keys(prefix):
            head = key[len(prefix) :].split("/", 1)[0]
            if head.isdigit():
                versions.add(int(head))
    return versions


def next_version(store: ObjectStore) -> int:
    return max([int(time.time()), *(v + 1 for v in existing_versions(store))])


def upload_export(
    store: ObjectStore, local_dir: Path, settings: Settings | None = None
) -> tuple[Instance, int]:
    """Upload the SavedModel in `local_dir` to the idle instance; return (instance, version).

    `settings` name the Kafka cluster and `model-updates` topic, read only to settle a pending
    publish (default: from the environment).
    """
    local_dir = Path(local_dir)
    if not (local_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{local_dir} holds no saved_model.pb")
    store.ensure_bucket()
    settle_pending(settings or Settings.load(), store)
    instance = idle_instance(store)
    version = next_version(store)
    prefix = model_version_prefix(instance, version)
    files = store.upload_dir(local_dir, prefix)
    # The marker goes last: until it exists, readers treat the version as absent.
    store.put_bytes(completion_marker(instance, version), b"")
    log.info("uploaded %d files to %s and marked it complete", files, prefix)
    return instance, version
