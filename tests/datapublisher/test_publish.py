"""Publishing on the real MinIO: the pointer, round-trips of both import formats, refusals, retention."""

import pandas as pd
import pytest

from common.schemas import SnapshotPointer
from common.snapshots import NO_SNAPSHOT, NoSnapshotError, read_current_snapshot
from common.storage import CURRENT_SNAPSHOT, SNAPSHOTS_PREFIX, ObjectStore
from datapublisher.generate import generate_purchases
from datapublisher.snapshots import prune_snapshots, publish_snapshot
from recommender.cli import main


@pytest.fixture
def store(settings):
    return ObjectStore.from_settings(settings)


def snapshot_ids(store):
    return sorted({key[len(SNAPSHOTS_PREFIX) :].split("/")[0] for key in store.list_keys(SNAPSHOTS_PREFIX)})


def test_publish_then_read_back(store):
    with pytest.raises(NoSnapshotError, match=NO_SNAPSHOT):
        read_current_snapshot(store)
    frame = generate_purchases(200, 40, 1500, seed=4)
    pointer = publish_snapshot(store, frame)
    assert store.get_model(CURRENT_SNAPSHOT, SnapshotPointer) == pointer
    assert (pointer.rows, pointer.users, pointer.products) == (1500, 200, frame["product"].nunique())
    assert pointer.path == f"data/snapshots/{pointer.snapshot_id}/purchases.parquet"
    snapshot = read_current_snapshot(store)
    assert snapshot.pointer == pointer
    assert (snapshot.purchases["quantity"].dtype, snapshot.purchases["timestamp"].dtype) == ("int32", "int64")
    assert all(isinstance(v, str) for v in snapshot.purchases["user"])
    pd.testing.assert_frame_equal(snapshot.purchases, frame, check_dtype=False)


def test_lightbend_import_round_trips_through_the_cli(store, tmp_path, capsys):
    path = tmp_path / "orders.csv"
    path.write_text("customerId,products\n1042,17|3|250\n7,3\nu9,p1|p1\n")
    assert main(["datapublisher", "publish", "--lightbend", str(path)]) == 0
    out = capsys.readouterr().out
    pointer = store.get_model(CURRENT_SNAPSHOT, SnapshotPointer)
    assert f"published snapshot {pointer.snapshot_id}: 5 rows, 3 users, 4 products" in out
    rows = read_current_snapshot(store).purchases
    assert list(zip(rows["user"], rows["product"], rows["quantity"], strict=True)) == [
        ("1042", "17", 1),
        ("1042", "3", 1),
        ("1042", "250", 1),
        ("7", "3", 1),
        ("u9", "p1", 2),
    ]


def test_generic_csv_and_parquet_import_round_trip(store, tmp_path, capsys):
    source = pd.DataFrame(
        {"cust": ["a", "b", "a"], "sku": [5, 6, 7], "qty": [1, 2, 3], "ts": [1000, 2000, 3000]}
    )
    csv_path = tmp_path / "p.csv"
    source.to_csv(csv_path, index=False)
    mapping = [
        "--user-column",
        "cust",
        "--product-column",
        "sku",
        "--quantity-column",
        "qty",
        "--timestamp-column",
        "ts",
    ]
    assert main(["datapublisher", "publish", "--csv", str(csv_path), *mapping]) == 0
    expected = pd.DataFrame(
        {
            "user": ["a", "b", "a"],
            "product": ["5", "6", "7"],
            "quantity": [1, 2, 3],
            "timestamp": [1000, 2000, 3000],
        }
    )
    pd.testing.assert_frame_equal(read_current_snapshot(store).purchases, expected, check_dtype=False)

    parquet_path = tmp_path / "p.parquet"
    source.to_parquet(parquet_path)
    assert main(["datapublisher", "publish", "--parquet", str(parquet_path), *mapping]) == 0
    pd.testing.assert_frame_equal(read_current_snapshot(store).purchases, expected, check_dtype=False)
    assert len(snapshot_ids(store)) == 2
    assert "3 rows, 2 users, 3 products" in capsys.readouterr().out


def test_malformed_file_is_refused_and_current_is_unchanged(store, tmp_path, capsys):
    publish_snapshot(store, generate_purchases(50, 10, 200, seed=1))
    before = store.get_bytes(CURRENT_SNAPSHOT)
    bad = tmp_path / "bad.csv"
    bad.write_text("customerId,products\n1,2|3\n2,\n,5\n4,6||7\n5,8\n")
    assert main(["datapublisher", "publish", "--lightbend", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "3 of 5 rows are malformed" in err
    assert "line 3:" in err and "line 4: empty customerId" in err and "line 5:" in err
    assert "data/current.json is unchanged" in err
    assert store.get_bytes(CURRENT_SNAPSHOT) == before
    assert len(snapshot_ids(store)) == 1

    empty = tmp_path / "empty.csv"
    empty.write_text("user,product,quantity,timestamp\nu1,,1,5\n")
    assert main(["datapublisher", "publish", "--csv", str(empty)]) == 1
    assert "no valid rows (1 read): line 2: empty product" in capsys.readouterr().err
    assert store.get_bytes(CURRENT_SNAPSHOT) == before


def test_a_few_bad_rows_are_skipped_and_reported(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAX_BAD_FRACTION", "0.5")
    path = tmp_path / "orders.csv"
    path.write_text("customerId,products\n1,2\n2,3\n3,\n")
    assert main(["datapublisher", "publish", "--lightbend", str(path)]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 malformed row(s): line 4:" in captured.err
    assert "2 rows, 2 users, 2 products" in captured.out


def test_retention_keeps_the_newest_and_never_the_current(store):
    frame = generate_purchases(20, 5, 40, seed=0)
    pointers = [publish_snapshot(store, frame, keep=2) for _ in range(4)]
    assert snapshot_ids(store) == sorted(p.snapshot_id for p in pointers[2:])
    # An operator rolled current back to the older snapshot: pruning to 1 must still keep it.
    store.put_model(CURRENT_SNAPSHOT, pointers[2])
    assert prune_snapshots(store, keep=1) == []
    newest = publish_snapshot(store, frame, keep=1)
    assert snapshot_ids(store) == [newest.snapshot_id]


def test_the_sparse_preset_through_the_cli(store, capsys):
    """--preset sparse brings its shape (light buyers, many re-buys) with it, also at other sizes."""
    args = ["datapublisher", "publish", "--generate", "--preset", "sparse", "--users", "2500"]
    assert main([*args, "--purchases", "15000"]) == 0
    assert "15,000 rows, 2,500 users" in capsys.readouterr().out
    purchases = read_current_snapshot(store).purchases
    assert purchases.groupby("user").size().between(1, 5).mean() > 0.7
    assert purchases.duplicated(["user", "product"]).mean() > 0.4
