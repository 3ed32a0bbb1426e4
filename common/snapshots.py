"""Reading snapshots from MinIO: follow `data/current.json`, read the Parquet file it names.

The data publisher writes snapshots and moves the pointer (`datapublisher.snapshots`); every
reader (trainer, client, model publisher, bootstrap) comes through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from common.schemas import SnapshotPointer
from common.storage import CURRENT_SNAPSHOT, ObjectStore

NO_SNAPSHOT = "no current snapshot: run recommender datapublisher publish first"


class NoSnapshotError(Exception):
    """`data/current.json` does not exist (or points at nothing)."""


@dataclass(frozen=True)
class Snapshot:
    pointer: SnapshotPointer
    purchases: pd.DataFrame


def current_pointer(store: ObjectStore) -> SnapshotPointer | None:
    """What `data/current.json` says, or None when it does not exist."""
    return store.get_model(CURRENT_SNAPSHOT, SnapshotPointer)


def read_purchases(
    store: ObjectStore, path: str, columns: Sequence[str] | None = None
) -> pd.DataFrame | None:
    """The snapshot file at `path` (only `columns` when given), or None when it does not exist."""
    data = store.get_bytes(path)
    if data is None:
        return None
    return pq.read_table(pa.BufferReader(data), columns=columns).to_pandas()


def read_current_snapshot(store: ObjectStore) -> Snapshot:
    """The snapshot `data/current.json` points at; `NoSnapshotError` when there is none."""
    if not store.client.bucket_exists(store.bucket):
        raise NoSnapshotError(NO_SNAPSHOT)
    pointer = current_pointer(store)
    if pointer is None:
        raise NoSnapshotError(NO_SNAPSHOT)
    purchases = read_purchases(store, pointer.path)
    if purchases is None:
        raise NoSnapshotError(f"{NO_SNAPSHOT} (data/current.json points at missing {pointer.path})")
    return Snapshot(pointer=pointer, purchases=purchases)
