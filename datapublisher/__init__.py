"""Data publisher: puts purchase-history snapshots into MinIO and moves data/current.json."""
