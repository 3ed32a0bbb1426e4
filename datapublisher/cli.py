"""`recommender datapublisher publish`: generate or import purchases and publish them as a snapshot."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pandas as pd
from click_option_group import RequiredMutuallyExclusiveOptionGroup, optgroup
from pydantic import Field

from common.cli import OrderedGroup, settings_options
from common.progress import ProgressLine
from common.settings import Settings
from common.storage import ObjectStore
from datapublisher.generate import ALL_PRESETS, generate_purchases
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


FILE = click.Path(path_type=Path)  # existence is checked later, with the one-line import errors


@dataclass(frozen=True)
class Source:
    """Where the purchases come from: the generator's sizes or a file and its columns."""

    generate: bool
    csv: Path | None
    parquet: Path | None
    lightbend: Path | None
    preset: str
    users: int | None
    products: int | None
    purchases: int | None
    seed: int
    user_column: str
    product_column: str
    quantity_column: str
    timestamp_column: str
    max_bad_rows_shown: int


command = OrderedGroup(
    "datapublisher",
    short_help="publish purchase-history snapshots to MinIO",
    help="Publish a snapshot of purchase history under data/snapshots/<id>/ and move data/current.json "
    "to it once it is complete.",
)


@command.command(
    "publish",
    short_help="generate or import purchases and publish them",
    help="Generate synthetic purchases or import a file, then publish it as the current snapshot and keep "
    "the newest --keep snapshots. Malformed rows are skipped and reported with their line numbers; a file "
    "with no valid rows, or with more malformed rows than MAX_BAD_FRACTION (default 1%), is refused and "
    "data/current.json stays as it was.",
)
@optgroup.group("source", cls=RequiredMutuallyExclusiveOptionGroup)
@optgroup.option("--generate", is_flag=True, help="synthetic purchases (see --preset)")
@optgroup.option("--csv", type=FILE, help="generic CSV with a header row")
@optgroup.option("--parquet", type=FILE, help="generic Parquet table")
@optgroup.option("--lightbend", type=FILE, help="original customerId,products CSV")
@optgroup.group("generator (--generate)")
@optgroup.option(
    "--preset",
    type=click.Choice(sorted(ALL_PRESETS)),
    default="default",
    help="size preset: default = 50k users, 5k products, 1M purchases; small for tests; sparse = 25k "
    "users, 300 products, 150k purchases, most users buying 1-5 times, many re-buys",
)
@optgroup.option("--users", type=int, help="number of users (overrides the preset)")
@optgroup.option("--products", type=int, help="number of products (overrides the preset)")
@optgroup.option("--purchases", type=int, help="number of purchases (overrides the preset)")
@optgroup.option("--seed", type=int, default=0, help="random seed; the same seed gives the same data")
@optgroup.group("column names (--csv, --parquet)")
@optgroup.option("--user-column", default="user", help="column holding the user id (default user)")
@optgroup.option("--product-column", default="product", help="column holding the product id")
@optgroup.option(
    "--quantity-column",
    default="quantity",
    help="column holding the quantity; 1 when the file has no such column",
)
@optgroup.option(
    "--timestamp-column", default="timestamp", help="column holding epoch milliseconds or ISO-8601 times"
)
@settings_options(DataPublisherSettings, snapshots_keep="--keep")
@click.option(
    "--max-bad-rows-shown",
    type=int,
    default=20,
    help="malformed rows listed with their line numbers (default 20)",
)
def publish_command(overrides: dict[str, Any], **source: Any) -> int:
    settings = DataPublisherSettings.load(**overrides)
    try:
        frame, report = _load(Source(**source))
        if report is not None:
            report.check(settings.max_bad_fraction)
    except (ImportRefused, ValueError) as exc:
        print(f"error: {exc}; data/current.json is unchanged", file=sys.stderr)
        return 1
    if report is not None and report.bad_rows:
        print(f"skipped {report.bad_rows} malformed row(s): {report.describe_bad_rows()}", file=sys.stderr)
    pointer = publish_snapshot(ObjectStore.from_settings(settings), frame, settings.snapshots_keep)
    print(
        f"published snapshot {pointer.snapshot_id}: {pointer.rows:,} rows, {pointer.users:,} users, "
        f"{pointer.products:,} products -> {settings.minio_bucket}/{pointer.path}"
    )
    return 0


def _load(args: Source) -> tuple[pd.DataFrame, ImportReport | None]:
    if args.generate:
        preset = ALL_PRESETS[args.preset]
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
                activity_sigma=preset.activity_sigma,
                repeat_fraction=preset.repeat_fraction,
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
