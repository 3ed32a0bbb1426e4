"""Mirror the complete versions under `models/<instance>/` into TF-Serving's model base path.

TF-Serving 2.7+ cannot read `s3://` (tensorflow/serving#1963), so this sidecar copies each
complete version (its `_COMPLETE` marker present) to `<base>/<model_name>/<version>/`. A
version is downloaded into a hidden temporary directory on the same file system and renamed
into place, so the server never sees half a version; it only polls numeric directory names.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from common.errors import describe_exception
from common.retry import Backoff, retry
from common.schemas import Instance
from common.settings import ServingSettings
from common.storage import COMPLETION_MARKER, ObjectStore, model_version_prefix

log = logging.getLogger(__name__)

TMP_PREFIX = ".modelsync-"


class ModelSyncSettings(ServingSettings):
    modelsync_poll_seconds: float = Field(5.0, gt=0, description="Seconds between two looks at MinIO.")
    modelsync_keep_versions: int = Field(2, ge=1, description="Newest versions kept on local disk.")
    modelsync_max_backoff_seconds: float = Field(60.0, gt=0, description="Longest wait after failures.")


@dataclass(frozen=True)
class SyncResult:
    downloaded: list[int]
    removed: list[int]


class ModelSync:
    """One instance's mirror: `sync_once()` for a single pass, `run()` for the sidecar loop."""

    def __init__(self, store: ObjectStore, instance: Instance, model_dir: Path, keep: int = 2) -> None:
        self.store = store
        self.instance = instance
        self.model_dir = model_dir  # <base>/<model_name>: TF-Serving's --model_base_path
        self.keep = keep

    def local_versions(self) -> list[int]:
        if not self.model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir.iterdir() if p.name.isdigit() and p.is_dir())

    def sync_once(self) -> SyncResult:
        """Download the newest `keep` complete versions that are missing, then prune old ones."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        remote = self.store.model_versions(self.instance)[-self.keep :]
        local = set(self.local_versions())
        downloaded = []
        for version in remote:
            if version not in local:
                self._download(version)
                downloaded.append(version)
        # Keep the newest N of everything on disk: a version deleted from MinIO stays until
        # newer ones push it out, so an emptied prefix never unloads the served model.
        on_disk = self.local_versions()
        removed = on_disk[: -self.keep] if len(on_disk) > self.keep else []
        for version in removed:
            self._remove(version)
        return SyncResult(downloaded, removed)

    def _download(self, version: int) -> None:
        prefix = model_version_prefix(self.instance, version)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-", dir=self.model_dir))
        try:
            count = self.store.download_prefix(prefix, tmp)
            (tmp / COMPLETION_MARKER).unlink(missing_ok=True)  # a storage detail, not part of the model
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the server may run as another user
            os.rename(tmp, self.model_dir / str(version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("mirrored %s (%d files) to %s", prefix, count, self.model_dir / str(version))

    def _remove(self, version: int) -> None:
        # Rename first so the version disappears at once, then delete at leisure.
        doomed = self.model_dir / f"{TMP_PREFIX}delete-{version}"
        os.rename(self.model_dir / str(version), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("removed local version %d (keeping the newest %d)", version, self.keep)

    def _remove_leftovers(self) -> None:
        for path in self.model_dir.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)

    def run(self, stop: threading.Event, poll_seconds: float, max_backoff: float) -> None:
        """Sync until `stop` is set; on failure back off exponentially, logging each state change once."""
        reachable: bool | None = None

        def unreachable(exc: BaseException) -> None:
            nonlocal reachable
            if reachable is not False:
                log.warning(
                    "MinIO unreachable (%s); retrying with backoff up to %.0fs",
                    describe_exception(exc, 200),
                    max_backoff,
                )
            reachable = False

        while not stop.is_set():
            try:
                # Failures wait twice the poll interval, then twice as long each time, up to max_backoff.
                retry(
                    self.sync_once,
                    Backoff(2 * poll_seconds, cap=max_backoff),
                    cancel=stop,
                    on_retry=unreachable,
                    sleep=stop.wait,
                )
            except Exception:
                return  # stopped while MinIO was unreachable
            if reachable is False:
                log.info("MinIO reachable again")
            elif reachable is None:
                log.info("watching %s in bucket %s", f"models/{self.instance}/", self.store.bucket)
            reachable = True
            stop.wait(poll_seconds)
