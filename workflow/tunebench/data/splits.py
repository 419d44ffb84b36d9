"""Deterministic train/dev/test splits: stratified, grouped, given by the source, or chosen by a column."""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from tunebench.data.loaders import DataError


def _where(ds: dict, name: str) -> str:
    """How split errors name their source: the raw data and the config key that set the split up."""
    return f"{ds['path']}: dataset '{name}' (config key 'datasets.{name}.split')"


def assign_splits(table: pl.DataFrame, ds: dict, name: str) -> pl.DataFrame:
    """Return `table` with a `split` column (train/dev/test) decided by the dataset's split settings."""
    cfg = ds["split"]
    method, seed = cfg["method"], cfg["seed"]
    where = _where(ds, name)
    split = np.full(table.height, "train", dtype=object)
    if method == "random":
        test_idx = _carve(table, np.arange(table.height), cfg["test"], seed, ds, where)
        split[test_idx] = "test"
    elif method == "given":
        given = table["given_split"].to_numpy()
        if not (given == "test").any():
            raise DataError(f"{where}: split method 'given' but the source marks no test rows")
        split[given == "test"] = "test"
        split[given == "dev"] = "dev"
    elif method == "column":
        values = table["split_value"].to_numpy()
        test_values = cfg.get("test_values")
        if test_values is None:
            bad = sorted({v for v in values if v not in ("train", "dev", "test")})
            if bad:
                raise DataError(f"{where}: split column '{cfg['column']}' has values {bad[:5]}; "
                                f"expected train/dev/test, or set split.test_values")
            split[:] = values
        else:
            split[np.isin(values, [str(v) for v in test_values])] = "test"
            split[np.isin(values, [str(v) for v in cfg.get("dev_values") or []])] = "dev"
    if not (split == "dev").any():
        train_idx = np.flatnonzero(split == "train")
        fraction = cfg["dev"] / (1 - (cfg["test"] if method == "random" else 0))
        dev_idx = _carve(table, train_idx, fraction, seed, ds, where)
        split[dev_idx] = "dev"
    out = table.with_columns(pl.Series("split", split.astype(str)))
    check_splits(out, ds, name)
    return out


def _carve(table: pl.DataFrame, idx: np.ndarray, fraction: float, seed: int, ds: dict, where: str) -> np.ndarray:
    """Pick `fraction` of the rows `idx`: whole groups if the data has groups, else stratified by label."""
    groups = table["group"].to_numpy()[idx]
    if ds["task"] == "classification" and all(g is None for g in groups):
        labels = table["label"].to_numpy()[idx]
        classes, counts = np.unique(labels, return_counts=True)
        if counts.min() < 2:
            raise DataError(f"{where}: class '{classes[counts.argmin()]}' has {counts.min()} row among the "
                            f"{len(idx)} being split; a stratified split needs at least 2 rows per class")
        try:
            _, picked = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
        except ValueError as e:  # e.g. fewer held-out rows than classes
            raise DataError(f"{where}: cannot split {len(idx)} rows stratified by label: {e}") from None
        return np.sort(picked)
    if all(g is None for g in groups):
        _, picked = train_test_split(idx, test_size=fraction, random_state=seed)
        return np.sort(picked)
    groups = np.array([g if g is not None else f"__row{i}" for i, g in zip(idx, groups)], dtype=object)
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    _, picked = next(splitter.split(idx, groups=groups))
    return np.sort(idx[picked])


def check_splits(table: pl.DataFrame, ds: dict, name: str) -> None:
    where = _where(ds, name)
    counts = table["split"].value_counts()
    present = set(counts["split"].to_list())
    for s in ("train", "dev", "test"):
        if s not in present:
            raise DataError(f"{where}: the {s} split is empty")
    if ds["task"] == "classification":
        train_labels = set(table.filter(pl.col("split") == "train")["label"].unique().to_list())
        missing = [lab for lab in ds["labels"] if lab not in train_labels]
        if missing:
            raise DataError(f"{where}: class(es) {missing} absent from the training split; every class "
                            f"needs training rows")
    # Groups bind rows together in random splits; a split by column (e.g. by year) may cut across them.
    if ds["split"]["method"] == "random" and table["group"].null_count() < table.height:
        per_group = table.filter(pl.col("group").is_not_null()).group_by("group").agg(pl.col("split").n_unique())
        leaking = per_group.filter(pl.col("split") > 1)
        if leaking.height:
            raise DataError(f"{where}: group '{leaking['group'][0]}' sits in more than one split; a group's "
                            f"rows must all be in one")
