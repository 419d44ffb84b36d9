"""Rule `prepare`: raw file(s) → validated, split table (Parquet), exported splits and a manifest."""

from __future__ import annotations

import polars as pl

from tunebench import files
from tunebench.data.loaders import load_dataset_table, verify_sha256
from tunebench.data.splits import (assign_splits, duplicate_texts, near_duplicate_texts, near_duplicates_in_test,
                                   texts_in_two_splits)

TABLE_COLUMNS = ["id", "text", "label", "target", "agreement", "group", "split", "near_duplicate_of_train",
                 "test_subset", "source_line"]
# What other tools need to score on exactly our rows: the split, the evaluation subset and the FPB stratum.
SPLITS_COLUMNS = ["id", "split", "test_subset", "agreement"]


def prepare_dataset(ds: dict, name: str, table_path, splits_path, manifest_path) -> pl.DataFrame:
    digests = verify_sha256(ds)
    table = assign_splits(load_dataset_table(ds, name), ds, name)
    table = table.select([c for c in TABLE_COLUMNS if c in table.columns])
    manifest = {
        "dataset": name,
        "task": ds["task"],
        "labels": ds.get("labels"),
        "raw_sha256": digests,
        "split_method": ds["split"]["method"],
        "rows": table.height,
        "rows_per_split": dict(table.group_by("split").len().sort("split").iter_rows()),
        "duplicate_texts": duplicate_texts(table, ds),
        "near_duplicate_texts": near_duplicate_texts(table, ds),
        "texts_in_two_splits": texts_in_two_splits(table),
        # Test rows whose text a train or dev row repeats up to the near-duplicate key (none in a split we make;
        # the table's column near_duplicate_of_train flags them, so metrics can leave them out).
        "test_near_duplicates_of_train": near_duplicates_in_test(table),
    }
    if ds["task"] == "classification":
        manifest["rows_per_label"] = per_split(table, "label")
    if "agreement" in table.columns:
        manifest["rows_per_agreement"] = per_split(table, "agreement")
    if "test_subset" in table.columns:
        subset = table.filter(pl.col("test_subset"))
        manifest["test_subset"] = {**ds["test_subset"], "rows": subset.height}
        if ds["task"] == "classification":
            manifest["test_subset"]["rows_per_label"] = dict(subset.group_by("label").len().sort("label").iter_rows())
    # The table is written last of the three: its presence means the other two are complete too.
    files.write_csv(splits_path, table.select([c for c in SPLITS_COLUMNS if c in table.columns]))
    files.write_json(manifest_path, manifest)
    files.write_parquet(table_path, table)
    return table


def per_split(table: pl.DataFrame, column: str) -> dict:
    return {s: dict(table.filter(pl.col("split") == s).group_by(column).len().sort(column).iter_rows())
            for s in ("train", "dev", "test")}


def read_table(path) -> pl.DataFrame:
    return pl.read_parquet(path)
