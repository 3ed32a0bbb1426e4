"""`recommender datapublisher publish`: generate or import purchases and publish them as a snapshot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from pydantic import Field

from common.progress import ProgressLine
from common.settings import Settings
from common.storage import ObjectStore
from datapublisher.generate import PRESETS, generate_purchases
from datapublisher.importers import (
    ColumnMap,
    ImportRefused,
    ImportReport,
    import_csv,
    import_lightbend,
    import_parquet,
)
from datapublisher.snapshots import publish_snapshot


class DataPublisherSettings(Settings):
    snapshots_keep: int = Field(3, ge=1, description="Snapshots kept in MinIO (the current one always is).")
    max_bad_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest share of malformed rows an import may skip before it is refused.",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "datapublisher",
        help="publish purchase-history snapshots to MinIO",
        description="Publish a snapshot of purchase history under data/snapshots/<id>/ and move "
        "data/current.json to it once it is complete.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    publish = actions.add_parser(
        "publish",
        help="generate or import purchases and publish them",
        description="Generate synthetic purchases or import a file, then publish it as the current "
        "snapshot and keep the newest --keep snapshots. Malformed rows are skipped and reported with "
        "their line numbers; a file with no valid rows, or with more malformed rows than "
        "MAX_BAD_FRACTION (default 1%), is refused and data/current.json stays as it was.",
    )
    source = publish.add_mutually_exclusive_group(required=True)
    source.add_argument("--generate", action="store_true", help="synthetic purchases (see --preset)")
    source.add_argument("--csv", type=Path, metavar="FILE", help="generic CSV with a header row")
    source.add_argument("--parquet", type=Path, metavar="FILE", help="generic Parquet table")
    source.add_argument("--lightbend", type=Path, metavar="FILE", help="original customerId,products CSV")

    gen = publish.add_argument_group("generator (--generate)")
    gen.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="size preset: default = 50k users, 5k products, 1M purchases; small for tests",
    )
    gen.add_argument("--users", type=int, help="number of users (overrides the preset)")
    gen.add_argument("--products", type=int, help="number of products (overrides the preset)")
    gen.add_argument("--purchases", type=int, help="number of purchases (overrides the preset)")
    gen.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data")

    cols = publish.add_argument_group("column names (--csv, --parquet)")
    cols.add_argument("--user-column", default="user", help="column holding the user id (default user)")
    cols.add_argument("--product-column", default="product", help="column holding the product id")
    cols.add_argument(
        "--quantity-column",
        default="quantity",
        help="column holding the quantity; 1 when the file has no such column",
    )
    cols.add_argument(
        "--timestamp-column", default="timestamp", help="column holding epoch milliseconds or ISO-8601 times"
    )

    publish.add_argument("--keep", type=int, help="snapshots to keep (default SNAPSHOTS_KEEP, 3)")
    publish.add_argument(
        "--max-bad-rows-shown",
        type=int,
        default=20,
        help="malformed rows listed with their line numbers (default 20)",
    )
    parser.set_defaults(handler=run)


def _load(args: argparse.Namespace) -> tuple[pd.DataFrame, ImportReport | None]:
    if args.generate:
        preset = PRESETS[args.preset]
        users = args.users or preset.users
        products = args.products or preset.products
        purchases = args.purchases or preset.purchases
        with ProgressLine("generating") as line:
            frame = generate_purchases(
                users,
                products,
                purchases,
                args.seed,
                progress=lambda done, total: line.update(done, f"{done:,}/{total:,} users", total),
            )
        return frame, None
    columns = ColumnMap(args.user_column, args.product_column, args.quantity_column, args.timestamp_column)
    path: Path = args.csv or args.parquet or args.lightbend
    if not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    with ProgressLine(f"reading {path.name}") as line:

        def progress(done: int, position: int, total: int) -> None:
            line.update(position, f"{done:,} rows", total)

        if args.csv:
            return import_csv(path, columns, args.max_bad_rows_shown, progress)
        if args.parquet:
            return import_parquet(path, columns, args.max_bad_rows_shown, progress)
        return import_lightbend(path, args.max_bad_rows_shown, progress)


def run(args: argparse.Namespace) -> int:
    settings = DataPublisherSettings.load()
    keep = args.keep if args.keep is not None else settings.snapshots_keep
    if keep < 1:
        print("error: --keep must be at least 1", file=sys.stderr)
        return 2
    try:
        frame, report = _load(args)
        if report is not None:
            report.check(settings.max_bad_fraction)
    except (ImportRefused, ValueError) as exc:
        print(f"error: {exc}; data/current.json is unchanged", file=sys.stderr)
        return 1
    if report is not None and report.bad_rows:
        print(f"skipped {report.bad_rows} malformed row(s): {report.describe_bad_rows()}", file=sys.stderr)
    pointer = publish_snapshot(ObjectStore.from_settings(settings), frame, keep)
    print(
        f"published snapshot {pointer.snapshot_id}: {pointer.rows:,} rows, {pointer.users:,} users, "
        f"{pointer.products:,} products -> {settings.minio_bucket}/{pointer.path}"
    )
    return 0
