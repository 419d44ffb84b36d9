"""Rule `prepare`: raw file(s) → validated, split table (Parquet), exported splits and a manifest."""

from __future__ import annotations

import polars as pl

from tunebench import files
from tunebench.data.loaders import load_dataset_table, verify_sha256
from tunebench.data.splits import assign_splits

TABLE_COLUMNS = ["id", "text", "label", "target", "group", "split", "source_line"]


def prepare_dataset(ds: dict, name: str, table_path, splits_path, manifest_path) -> pl.DataFrame:
    digests = verify_sha256(ds)
    table = assign_splits(load_dataset_table(ds, name), ds, name)
    table = table.select([c for c in TABLE_COLUMNS if c in table.columns])
    manifest = {
        "dataset": name,
        "task": ds["task"],
        "labels": ds.get("labels"),
        "raw_sha256": digests,
        "rows": table.height,
        "rows_per_split": dict(table.group_by("split").len().sort("split").iter_rows()),
    }
    if ds["task"] == "classification":
        manifest["rows_per_label"] = {
            s: dict(table.filter(pl.col("split") == s).group_by("label").len().sort("label").iter_rows())
            for s in ("train", "dev", "test")
        }
    # The table is written last of the three: its presence means the other two are complete too.
    files.write_csv(splits_path, table.select("id", "split"))
    files.write_json(manifest_path, manifest)
    files.write_parquet(table_path, table)
    return table


def read_table(path) -> pl.DataFrame:
    return pl.read_parquet(path)
