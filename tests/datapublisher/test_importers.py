"""Generic CSV/Parquet and Lightbend importers: parsing, id handling and malformed rows."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datapublisher.importers import (
    ColumnMap,
    ImportRefused,
    import_csv,
    import_lightbend,
    import_parquet,
    parse_timestamp_ms,
)


def test_csv_with_mapped_columns_iso_times_and_no_quantity(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(
        "customer,item,when\n"
        "c1,  42,2026-01-01T00:00:00Z\n"
        "\n"  # blank lines are skipped, not errors
        "c2,x-9,1700000000123\n"
    )
    frame, report = import_csv(path, ColumnMap(user="customer", product="item", timestamp="when"))
    assert report.rows_read == 2 and report.bad_rows == 0
    assert frame.to_dict("list") == {
        "user": ["c1", "c2"],
        "product": ["42", "x-9"],
        "quantity": [1, 1],
        "timestamp": [1767225600000, 1700000000123],
    }


def test_csv_bad_rows_are_counted_with_line_numbers(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "user,product,quantity,timestamp\n"
        "u1,p1,1,1000\n"
        "u2,,1,1000\n"  # line 3: empty product
        "\n"
        "u3,p3,zero,1000\n"  # line 5: bad quantity
        "u4,p4,1\n"  # line 6: missing field
        "u5,p5,2,yesterday\n"  # line 7: bad time
        "u6,p6,2,2000\n"
    )
    frame, report = import_csv(path, max_examples=3)
    assert list(frame["user"]) == ["u1", "u6"]
    assert report.rows_read == 6 and report.rows_valid == 2 and report.bad_rows == 4
    assert [line for line, _ in report.examples] == [3, 5, 6]
    assert "line 3: empty product" in report.describe_bad_rows()
    assert report.describe_bad_rows().endswith("and 1 more")
    with pytest.raises(ImportRefused, match=r"4 of 6 rows are malformed.*line 5: quantity"):
        report.check(max_bad_fraction=0.5)
    report.check(max_bad_fraction=0.7)  # within the allowed share: accepted


def test_file_without_valid_rows_or_columns_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("user,product,quantity,timestamp\n ,p1,1,5\nu1,p1,-1,5\n")
    _, report = import_csv(path)
    with pytest.raises(
        ImportRefused, match=r"no valid rows \(2 read\): line 2: empty user; line 3: quantity"
    ):
        report.check(max_bad_fraction=1.0)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(ImportRefused, match="missing column"):
        import_csv(wrong)


def test_parquet_int_ids_become_text_and_bad_rows_are_numbered(tmp_path):
    path = tmp_path / "p.parquet"
    table = pa.table(
        {
            "uid": pa.array([7, 8, None, 9], pa.int64()),
            "product": pa.array([100, 200, 300, 400], pa.int64()),
            "quantity": pa.array([1, 0, 1, 3], pa.int32()),
            "timestamp": pa.array([10, 20, 30, 40], pa.int64()),
        }
    )
    pq.write_table(table, path)
    frame, report = import_parquet(path, ColumnMap(user="uid"))
    assert frame.to_dict("list") == {
        "user": ["7", "9"],
        "product": ["100", "400"],
        "quantity": [1, 3],
        "timestamp": [10, 40],
    }
    assert report.examples == [(2, "quantity is not an integer >= 1"), (3, "empty user")]
    assert "row 2" in report.describe_bad_rows()


def test_lightbend_orders_expand_to_rows(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("customerId,products\n1,10|11|10\nabc,7\n2,\n3,4||5\n1,12\n")
    frame, report = import_lightbend(path)
    assert report.rows_read == 5 and report.rows_valid == 3 and report.bad_rows == 2
    assert [line for line, _ in report.examples] == [4, 5]
    assert frame.to_dict("list") == {
        "user": ["1", "1", "abc", "1"],
        "product": ["10", "11", "7", "12"],
        "quantity": [2, 1, 1, 1],
        # No times in this format: the line number keeps the order of orders.
        "timestamp": [2, 2, 3, 6],
    }


def test_timestamps():
    assert parse_timestamp_ms("1700000000000") == 1700000000000
    assert parse_timestamp_ms("1970-01-01T00:00:01") == 1000
    assert parse_timestamp_ms("1970-01-01T01:00:01+01:00") == 1000
    with pytest.raises(ValueError):
        parse_timestamp_ms("soon")
    assert parse_timestamp_ms("2026-01-01") == pd.Timestamp("2026-01-01", tz="UTC").value // 1_000_000


def test_progress_is_reported_while_reading(tmp_path, monkeypatch):
    monkeypatch.setattr("datapublisher.importers.PROGRESS_EVERY_ROWS", 2)
    path = tmp_path / "p.csv"
    path.write_text("user,product,quantity,timestamp\n" + "".join(f"u{i},p{i},1,{i}\n" for i in range(5)))
    calls = []
    import_csv(path, progress=lambda rows, done, total: calls.append((rows, done, total)))
    size = path.stat().st_size
    assert [rows for rows, _, _ in calls] == [2, 4, 6, 6]  # every 2 records, then the end
    assert all(0 < done <= total == size for _, done, total in calls) and calls[-1][1] == size
    assert calls[0][1] < calls[1][1] < calls[2][1] < calls[3][1]
