"""Importers: generic CSV/Parquet purchase tables and the original Lightbend/Kubeflow format.

Every importer returns the snapshot frame (`user, product, quantity, timestamp`, ids as text)
and an `ImportReport` that counts malformed rows and keeps the first few with their line
numbers. A file with no valid row, or with more bad rows than allowed, raises `ImportRefused`,
so nothing half-valid is ever published.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

COLUMNS = ("user", "product", "quantity", "timestamp")
DEFAULT_MAX_EXAMPLES = 20
PROGRESS_EVERY_ROWS = 200_000

Progress = Callable[[int, int, int], None]  # (rows read, bytes or rows done, bytes or rows in all)


class ImportRefused(Exception):
    """The input cannot become a snapshot; the message says why, with line numbers."""


@dataclass
class ImportReport:
    """What an import read: how many rows, how many were malformed and where."""

    source: str
    rows_read: int = 0
    rows_valid: int = 0
    bad_rows: int = 0
    max_examples: int = DEFAULT_MAX_EXAMPLES
    examples: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    where: str = "line"  # "line" for text files, "row" for Parquet (no lines there)

    def bad(self, line: int, reason: str) -> None:
        self.bad_rows += 1
        if len(self.examples) < self.max_examples:
            self.examples.append((line, reason))

    def describe_bad_rows(self) -> str:
        shown = "; ".join(f"{self.where} {line}: {reason}" for line, reason in self.examples)
        more = self.bad_rows - len(self.examples)
        return shown + (f"; and {more} more" if more > 0 else "")

    def check(self, max_bad_fraction: float) -> None:
        """Refuse a file with no valid row or with too many malformed ones."""
        if self.rows_valid == 0:
            detail = f": {self.describe_bad_rows()}" if self.bad_rows else ""
            raise ImportRefused(f"{self.source}: no valid rows ({self.rows_read} read){detail}")
        if self.bad_rows > max_bad_fraction * self.rows_read:
            raise ImportRefused(
                f"{self.source}: {self.bad_rows} of {self.rows_read} rows are malformed (more than "
                f"{max_bad_fraction:.1%} allowed): {self.describe_bad_rows()}"
            )


@dataclass(frozen=True)
class ColumnMap:
    """Names of the generic columns in the source file; quantity may be absent (then 1)."""

    user: str = "user"
    product: str = "product"
    quantity: str = "quantity"
    timestamp: str = "timestamp"


def parse_timestamp_ms(text: str) -> int:
    """Epoch milliseconds from an integer or an ISO-8601 time (naive times are UTC)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _timestamp_or_nan(value: object) -> float:
    try:
        return float(parse_timestamp_ms(str(value)))
    except ValueError:
        return np.nan


def _frame(
    users: list[str], products: list[str], quantities: list[int], timestamps: list[int]
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": pd.Series(users, dtype=object),
            "product": pd.Series(products, dtype=object),
            "quantity": np.asarray(quantities, dtype=np.int32),
            "timestamp": np.asarray(timestamps, dtype=np.int64),
        }
    )


def _lines(path: Path, progress: Progress | None) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank CSV record, reporting progress by characters read."""
    total = os.path.getsize(path)
    read = 0

    def counted(handle: Iterator[str]) -> Iterator[str]:
        # tell() is disabled while a text file is iterated, so count what passes through instead.
        nonlocal read
        for text in handle:
            read += len(text)
            yield text

    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(counted(handle))
        for count, fields in enumerate(reader, start=1):
            if progress is not None and count % PROGRESS_EVERY_ROWS == 0:
                progress(count, min(read, total - 1), total)
            if fields and any(f.strip() for f in fields):
                yield reader.line_num, fields
        if progress is not None:
            progress(reader.line_num, total, total)


def import_csv(
    path: Path,
    columns: ColumnMap = ColumnMap(),
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, ImportReport]:
    """A generic `user,product,quantity,timestamp` CSV with a header row (names mapped by `columns`)."""
    report = ImportReport(source=str(path), max_examples=max_examples)
    rows = _lines(path, progress)
    try:
        _, header = next(rows)
    except StopIteration:
        raise ImportRefused(f"{path}: the file is empty") from None
    header = [name.strip() for name in header]
    positions = _column_positions(path, header, columns)
    users: list[str] = []
    products: list[str] = []
    quantities: list[int] = []
    timestamps: list[int] = []
    for line, fields in rows:
        report.rows_read += 1
        if len(fields) != len(header):
            report.bad(line, f"expected {len(header)} fields, found {len(fields)}")
            continue
        parsed = _parse_generic(
            fields[positions[0]],
            fields[positions[1]],
            fields[positions[2]] if positions[2] is not None else "1",
            fields[positions[3]],
        )
        if isinstance(parsed, str):
            report.bad(line, parsed)
            continue
        users.append(parsed[0])
        products.append(parsed[1])
        quantities.append(parsed[2])
        timestamps.append(parsed[3])
    report.rows_valid = len(users)
    return _frame(users, products, quantities, timestamps), report


def _column_positions(path: Path, header: list[str], columns: ColumnMap) -> tuple[int, int, int | None, int]:
    missing = [name for name in (columns.user, columns.product, columns.timestamp) if name not in header]
    if missing:
        raise ImportRefused(
            f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)}); "
            "map names with --user-column/--product-column/--quantity-column/--timestamp-column"
        )
    quantity = header.index(columns.quantity) if columns.quantity in header else None
    return (
        header.index(columns.user),
        header.index(columns.product),
        quantity,
        header.index(columns.timestamp),
    )


def _parse_generic(user: str, product: str, quantity: str, timestamp: str) -> tuple[str, str, int, int] | str:
    """The parsed row, or the reason it is malformed."""
    user, product = user.strip(), product.strip()
    if not user:
        return "empty user"
    if not product:
        return "empty product"
    try:
        count = int(quantity.strip())
    except ValueError:
        return f"quantity is not an integer: {quantity!r}"
    if count < 1:
        return f"quantity must be at least 1: {count}"
    try:
        when = parse_timestamp_ms(timestamp)
    except ValueError:
        return f"timestamp is neither epoch milliseconds nor ISO-8601: {timestamp!r}"
    return user, product, count, when


def import_parquet(
    path: Path,
    columns: ColumnMap = ColumnMap(),
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, ImportReport]:
    """A generic Parquet table; malformed rows are reported by 1-based row number."""
    report = ImportReport(source=str(path), max_examples=max_examples, where="row")
    parquet = pq.ParquetFile(path)
    header = parquet.schema_arrow.names
    positions = _column_positions(path, header, columns)
    wanted = [header[p] for p in positions if p is not None]
    total = parquet.metadata.num_rows
    parts = []
    for batch in parquet.iter_batches(batch_size=PROGRESS_EVERY_ROWS, columns=wanted):
        chunk = batch.to_pandas()
        first_row = report.rows_read + 1
        report.rows_read += len(chunk)
        parts.append(_validate_chunk(chunk, columns, first_row, report))
        if progress is not None:
            progress(report.rows_read, report.rows_read, total)
    frame = pd.concat(parts, ignore_index=True) if parts else _frame([], [], [], [])
    report.rows_valid = len(frame)
    return frame, report


def _as_text(values: pd.Series) -> pd.Series:
    """Ids as text; integral floats (a Parquet int column with nulls) lose their '.0'."""
    if pd.api.types.is_float_dtype(values):
        integral = values.notna() & (values == values.round())
        text = values.astype(object).where(~integral, values.where(integral).astype("Int64").astype(str))
        return text.where(values.notna(), "").astype(str).str.strip()
    return values.astype(object).where(values.notna(), "").astype(str).str.strip()


def _validate_chunk(
    chunk: pd.DataFrame, columns: ColumnMap, first_row: int, report: ImportReport
) -> pd.DataFrame:
    users = _as_text(chunk[columns.user])
    products = _as_text(chunk[columns.product])
    if columns.quantity in chunk:
        quantity = pd.to_numeric(chunk[columns.quantity], errors="coerce")
    else:
        quantity = pd.Series(1, index=chunk.index)
    raw_time = chunk[columns.timestamp]
    if pd.api.types.is_datetime64_any_dtype(raw_time):
        stamps = raw_time.dt.tz_localize(None) if raw_time.dt.tz is None else raw_time.dt.tz_convert(None)
        timestamp = pd.Series(
            stamps.astype("datetime64[ms]").astype("int64"), index=chunk.index, dtype="float64"
        )
        timestamp[raw_time.isna()] = np.nan
    elif pd.api.types.is_numeric_dtype(raw_time):
        timestamp = pd.to_numeric(raw_time, errors="coerce")
    else:
        timestamp = raw_time.map(_timestamp_or_nan, na_action="ignore").astype("float64")

    reasons = pd.Series("", index=chunk.index, dtype=object)
    checks = [
        (timestamp.isna(), "timestamp is missing, or neither epoch milliseconds nor ISO-8601"),
        (
            quantity.isna() | (quantity != quantity.round()) | (quantity < 1),
            "quantity is not an integer >= 1",
        ),
        (products == "", "empty product"),
        (users == "", "empty user"),
    ]
    for failed, reason in checks:  # the last check that fails names the row's problem
        reasons[failed.to_numpy()] = reason
    bad = (reasons != "").to_numpy()
    for offset in np.flatnonzero(bad):
        report.bad(first_row + int(offset), reasons.iloc[offset])
    good = ~bad
    return pd.DataFrame(
        {
            "user": users[good].to_numpy(dtype=object),
            "product": products[good].to_numpy(dtype=object),
            "quantity": quantity[good].to_numpy().astype(np.int32),
            "timestamp": timestamp[good].to_numpy().astype(np.int64),
        }
    )


def import_lightbend(
    path: Path, max_examples: int = DEFAULT_MAX_EXAMPLES, progress: Progress | None = None
) -> tuple[pd.DataFrame, ImportReport]:
    """The original recommender's `customerId,products` CSV: one order a line, products `|`-separated.

    The format has no times, so an order's timestamp is its line number (epoch milliseconds):
    it keeps the file's order, which is all leave-one-out needs. A product listed twice in one
    order becomes one row with quantity 2.
    """
    report = ImportReport(source=str(path), max_examples=max_examples)
    users: list[str] = []
    products: list[str] = []
    quantities: list[int] = []
    timestamps: list[int] = []
    for line, fields in _lines(path, progress):
        if line == 1 and fields[0].strip().lower() == "customerid":
            continue  # the header
        report.rows_read += 1
        if len(fields) != 2:
            report.bad(line, f"expected 2 fields (customerId,products), found {len(fields)}")
            continue
        customer, listed = fields[0].strip(), fields[1].strip()
        items = [item.strip() for item in listed.split("|")]
        if not customer:
            report.bad(line, "empty customerId")
            continue
        if not listed or not all(items):
            report.bad(line, f"products must be a non-empty |-separated list of ids: {listed!r}")
            continue
        for item, count in _counted(items):
            users.append(customer)
            products.append(item)
            quantities.append(count)
            timestamps.append(line)
    report.rows_valid = report.rows_read - report.bad_rows
    return _frame(users, products, quantities, timestamps), report


def _counted(items: list[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return list(counts.items())
