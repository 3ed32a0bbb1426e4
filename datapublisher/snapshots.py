"""Snapshots in MinIO: publish one, move `data/current.json` to it, prune old ones.

The pointer is written only after the snapshot's Parquet file is uploaded and verified, with
one PUT, so a reader sees either the previous snapshot or the complete new one. Readers follow
the pointer through `common.snapshots`, the one place that does.
"""

from __future__ import annotations

import io
import logging
import secrets
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from common.schemas import SnapshotPointer, now_ms
from common.snapshots import current_pointer
from common.storage import (
    CURRENT_SNAPSHOT,
    PURCHASES_FILE,
    SNAPSHOTS_PREFIX,
    ObjectStore,
    snapshot_prefix,
)

log = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = pa.schema(
    [
        ("user", pa.string()),
        ("product", pa.string()),
        ("quantity", pa.int32()),
        ("timestamp", pa.int64()),
    ]
)


def new_snapshot_id() -> str:
    # Sortable UTC time plus a random suffix, so two publishers in the same second never collide.
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def to_parquet_bytes(purchases: pd.DataFrame) -> bytes:
    """The snapshot file in the contract's schema (ids as text, int32 quantity, int64 ms)."""
    missing = [c for c in SNAPSHOT_SCHEMA.names if c not in purchases.columns]
    if missing:
        raise ValueError(f"purchases lack column(s) {', '.join(missing)}")
    frame = pd.DataFrame(
        {
            "user": purchases["user"].astype(str),
            "product": purchases["product"].astype(str),
            "quantity": purchases["quantity"].astype("int32"),
            "timestamp": purchases["timestamp"].astype("int64"),
        }
    )
    table = pa.Table.from_pandas(frame, schema=SNAPSHOT_SCHEMA, preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def publish_snapshot(store: ObjectStore, purchases: pd.DataFrame, keep: int = 3) -> SnapshotPointer:
    """Upload `purchases` as a new snapshot, then point `data/current.json` at it; prune to `keep`."""
    if purchases.empty:
        raise ValueError("refusing to publish an empty snapshot")
    if keep < 1:
        raise ValueError("keep must be at least 1")
    store.ensure_bucket()
    snapshot_id = new_snapshot_id()
    key = snapshot_prefix(snapshot_id) + PURCHASES_FILE
    data = to_parquet_bytes(purchases)
    store.put_bytes(key, data, "application/vnd.apache.parquet")
    # Verify the upload landed whole before any reader can be sent to it.
    stat = store.client.stat_object(store.bucket, key)
    if stat.size != len(data):
        raise RuntimeError(f"snapshot upload incomplete: {key} has {stat.size} of {len(data)} bytes")
    pointer = SnapshotPointer(
        snapshot_id=snapshot_id,
        path=key,
        rows=len(purchases),
        users=int(purchases["user"].nunique()),
        products=int(purchases["product"].nunique()),
        created_at=now_ms(),
    )
    store.put_model(CURRENT_SNAPSHOT, pointer)
    log.info("published snapshot %s (%d rows)", snapshot_id, pointer.rows)
    prune_snapshots(store, keep)
    return pointer


def prune_snapshots(store: ObjectStore, keep: int) -> list[str]:
    """Delete all but the `keep` newest snapshots, never the current one; return the deleted ids."""
    newest: dict[str, float] = {}
    for obj in store.client.list_objects(store.bucket, prefix=SNAPSHOTS_PREFIX, recursive=True):
        snapshot_id = obj.object_name[len(SNAPSHOTS_PREFIX) :].split("/", 1)[0]
        stamp = obj.last_modified.timestamp() if obj.last_modified else 0.0
        newest[snapshot_id] = max(newest.get(snapshot_id, 0.0), stamp)
    current = current_pointer(store)
    ordered = sorted(newest, key=lambda sid: (newest[sid], sid), reverse=True)
    deleted = []
    for snapshot_id in ordered[keep:]:
        if current is not None and snapshot_id == current.snapshot_id:
            continue
        store.delete_prefix(snapshot_prefix(snapshot_id))
        deleted.append(snapshot_id)
    if deleted:
        log.info("deleted %d old snapshot(s): %s", len(deleted), ", ".join(deleted))
    return deleted
