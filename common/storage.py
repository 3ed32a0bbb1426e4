"""Object-storage layout (docs/contracts.md) and the MinIO helpers every component uses.

Pointers and records are written as whole objects (a single PUT is atomic in S3/MinIO),
and a model version counts as present only once its completion marker exists.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import urllib3
from minio import Minio
from minio.error import S3Error
from pydantic import BaseModel

from common.schemas import Instance, ServingRecord, other_instance
from common.settings import Settings

log = logging.getLogger(__name__)

CURRENT_SNAPSHOT = "data/current.json"
SERVING_RECORD = "models/serving.json"
SNAPSHOTS_PREFIX = "data/snapshots/"
COMPLETION_MARKER = "_COMPLETE"
PURCHASES_FILE = "purchases.parquet"
EXPORT_METADATA = "assets.extra/metadata.json"

M = TypeVar("M", bound=BaseModel)


def snapshot_prefix(snapshot_id: str) -> str:
    return f"{SNAPSHOTS_PREFIX}{snapshot_id}/"


def model_prefix(instance: Instance) -> str:
    return f"models/{instance}/"


def model_version_prefix(instance: Instance, version: int) -> str:
    return f"models/{instance}/{version}/"


def completion_marker(instance: Instance, version: int) -> str:
    return model_version_prefix(instance, version) + COMPLETION_MARKER


def make_client(settings: Settings) -> Minio:
    http_client = None
    if settings.minio_ca_file:
        # minio-py trusts certifi's bundle unless given a pool; this one is minio-py's default
        # (5-minute timeouts, 5 retries on 5xx) with the configured CA bundle instead.
        http_client = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=300, read=300),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=settings.minio_ca_file,
            retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
    return Minio(
        settings.minio_endpoint,
        access_key=settings.minio_access_key.get_secret_value(),
        secret_key=settings.minio_secret_key.get_secret_value(),
        secure=settings.minio_secure,
        http_client=http_client,
    )


class ObjectStore:
    """A bucket on MinIO with the few operations the components need."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        return cls(make_client(settings), settings.minio_bucket)

    def ensure_bucket(self) -> None:
        if self.client.bucket_exists(self.bucket):
            return
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as exc:
            # Another process (an init container, a bootstrap Job) created it since we looked.
            if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise
            return
        log.info("created bucket %s", self.bucket)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchObject"}:
                return None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def put_model(self, key: str, record: BaseModel) -> None:
        self.put_bytes(key, record.model_dump_json(indent=2).encode(), "application/json")

    def get_model(self, key: str, schema: type[M]) -> M | None:
        data = self.get_bytes(key)
        return None if data is None else schema.model_validate_json(data)

    def get_json(self, key: str) -> object | None:
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchObject"}:
                return False
            raise
        return True

    def list_keys(self, prefix: str, recursive: bool = True) -> Iterator[str]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=recursive):
            yield obj.object_name

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` (which must end in '/'); return how many."""
        if not prefix.endswith("/"):
            raise ValueError(f"refusing to delete a prefix that is not a folder: {prefix!r}")
        keys = list(self.list_keys(prefix))
        for key in keys:
            self.client.remove_object(self.bucket, key)
        return len(keys)

    def upload_dir(self, local_dir: Path, prefix: str) -> int:
        """Upload every file below `local_dir` under `prefix`; return the number of files."""
        count = 0
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            self.client.fput_object(self.bucket, prefix + path.relative_to(local_dir).as_posix(), str(path))
            count += 1
        return count

    def download_prefix(self, prefix: str, local_dir: Path) -> int:
        """Download every object under `prefix` into `local_dir`; return the number of files."""
        count = 0
        for key in self.list_keys(prefix):
            self.client.fget_object(self.bucket, key, str(local_dir / key[len(prefix) :]))
            count += 1
        return count

    def model_versions(self, instance: Instance) -> list[int]:
        """Complete versions (completion marker present) of one instance, oldest first."""
        versions = []
        prefix = model_prefix(instance)
        for key in self.list_keys(prefix):
            parts = key[len(prefix) :].split("/")
            if len(parts) == 2 and parts[1] == COMPLETION_MARKER and parts[0].isdigit():
                versions.append(int(parts[0]))
        return sorted(versions)


class PendingPublishError(RuntimeError):
    """`models/serving.json` holds a publish that may or may not have reached `model-updates`."""


def idle_instance(store: ObjectStore) -> Instance:
    """Where a new export goes: the instance `models/serving.json` does not name (`a` at first).

    A record with a `pending` publish is refused: either instance may be the one the model
    servers route to until `model-updates` says which (`modelpublisher.publisher.settle_pending`).
    """
    record = store.get_model(SERVING_RECORD, ServingRecord)
    if record is not None and record.pending is not None:
        raise PendingPublishError(
            f"{SERVING_RECORD} has a pending publish of instance {record.pending.instance} "
            f"version {record.pending.version}; settle it from the model-updates topic first"
        )
    return "a" if record is None else other_instance(record.instance)
