"""Deterministic train/dev/test splits: stratified, given by the source, chosen by a column, or a published
protocol (peer_splits); then, optionally, a fixed evaluation subset of the test split.

Rows with identical text, or the same `group`, form one unit that never straddles a split we make: the same
sentence in train and test would be scored as seen. Units are split stratified by their majority label.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.stats import rankdata
from sklearn.model_selection import train_test_split

from tunebench.data.errors import DataError
from tunebench.data.peer_splits import PEER_SPLITS


def _where(ds: dict, name: str, key: str = "split") -> str:
    """How split errors name their source: the raw data and the config key that set the split up."""
    return f"{ds['path']}: dataset '{name}' (config key 'datasets.{name}.{key}')"


def assign_splits(table: pl.DataFrame, ds: dict, name: str) -> pl.DataFrame:
    """Return `table` with a `split` column (train/dev/test) decided by the dataset's split settings, and a
    `test_subset` column if the dataset asks for one."""
    cfg = ds["split"]
    method, seed = cfg["method"], cfg["seed"]
    where = _where(ds, name)
    units = duplicate_units(table)
    split = np.full(table.height, "train", dtype=object)
    if method == "random":
        test_idx = _carve(table, units, np.arange(table.height), cfg["test"], seed, ds, where)
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
    else:
        # A published protocol fixes the test rows exactly, duplicates and all; dev still comes from its train.
        split[PEER_SPLITS[method](table, ds, where + f" with split method '{method}'")] = "test"
    if not (split == "dev").any():
        train_idx = np.flatnonzero(split == "train")
        fraction = cfg["dev"] / (1 - (cfg["test"] if method == "random" else 0))
        dev_idx = _carve(table, units, train_idx, fraction, seed, ds, where)
        split[dev_idx] = "dev"
    out = table.with_columns(pl.Series("split", split.astype(str)))
    if ds.get("test_subset") is not None:
        out = out.with_columns(pl.Series("test_subset", mark_test_subset(out, ds, name)))
    check_splits(out, ds, name)
    return out


def duplicate_units(table: pl.DataFrame) -> np.ndarray:
    """A unit number per row: rows with identical text or the same group share one (the connected components
    of rows linked through their texts and groups), numbered in the order of each unit's first row."""
    n = table.height
    _, text_node = np.unique(table["text"].to_numpy(), return_inverse=True)
    edges = [(np.arange(n), n + text_node)]
    groups = table["group"].to_numpy()
    has_group = np.array([g is not None for g in groups], dtype=bool)
    if has_group.any():
        _, group_node = np.unique(groups[has_group].astype(str), return_inverse=True)
        edges.append((np.flatnonzero(has_group), n + text_node.max() + 1 + group_node))
    rows = np.concatenate([a for a, _ in edges])
    cols = np.concatenate([b for _, b in edges])
    size = int(cols.max()) + 1
    _, component = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size)),
                                        directed=False)
    return _number_by_first_row(component[:n])


def _number_by_first_row(keys: np.ndarray) -> np.ndarray:
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=int)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse]


def _carve(table: pl.DataFrame, units: np.ndarray, idx: np.ndarray, fraction: float, seed: int, ds: dict,
           where: str) -> np.ndarray:
    """Pick `fraction` of the units among rows `idx` (stratified by label for classification); return their rows."""
    row_units = units[idx]
    unit_ids, first = np.unique(row_units, return_index=True)
    # In order of first row: without duplicates or groups the units are the rows, in the rows' order.
    unit_ids = unit_ids[np.argsort(first)]
    stratify = None
    if ds["task"] == "classification":
        stratify = majority_labels(table["label"].to_numpy()[idx], row_units, unit_ids)
        classes, counts = np.unique(stratify, return_counts=True)
        if counts.min() < 2:
            raise DataError(f"{where}: class '{classes[counts.argmin()]}' has {counts.min()} row among the "
                            f"{len(idx)} being split (rows with identical text or group count once); a "
                            f"stratified split needs at least 2 rows per class")
    try:
        _, picked = train_test_split(unit_ids, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as e:  # e.g. fewer held-out rows than classes
        raise DataError(f"{where}: cannot split {len(idx)} rows stratified by label: {e}") from None
    return np.sort(idx[np.isin(row_units, picked)])


def majority_labels(labels: np.ndarray, row_units: np.ndarray, unit_ids: np.ndarray) -> np.ndarray:
    """Each unit's most frequent label; of tied labels, the one that comes first in the unit's rows."""
    by_unit: dict[int, list] = {}
    for unit, label in zip(row_units, labels):
        by_unit.setdefault(unit, []).append(label)

    def majority(unit_labels: list):
        counts = Counter(unit_labels)
        top = max(counts.values())
        return next(label for label in unit_labels if counts[label] == top)

    return np.array([majority(by_unit[u]) for u in unit_ids], dtype=object)


def mark_test_subset(table: pl.DataFrame, ds: dict, name: str) -> np.ndarray:
    """True for a fixed subset of the test rows: `size` of them, stratified by label (classification) or by
    target tercile (regression), chosen by `seed`; every test row if there are no more than `size`."""
    cfg = ds["test_subset"]
    test_idx = np.flatnonzero(table["split"].to_numpy() == "test")
    marked = np.zeros(table.height, dtype=bool)
    if cfg["size"] >= len(test_idx):
        marked[test_idx] = True
        return marked
    if ds["task"] == "classification":
        strata, by = table["label"].to_numpy()[test_idx], "label"
    else:
        # Terciles by rank, so that tied targets still give three equal strata.
        ranks = rankdata(table["target"].to_numpy()[test_idx], method="ordinal") - 1
        strata, by = ranks * 3 // len(test_idx), "target tercile"
    try:
        _, picked = train_test_split(test_idx, test_size=cfg["size"], random_state=cfg["seed"], stratify=strata)
    except ValueError as e:  # a stratum with one row, or fewer rows asked for than there are strata
        raise DataError(f"{_where(ds, name, 'test_subset.size')}: cannot pick {cfg['size']} of the "
                        f"{len(test_idx)} test rows stratified by {by}: {e}") from None
    marked[picked] = True
    return marked


def duplicate_texts(table: pl.DataFrame, ds: dict) -> dict:
    """How many rows share their text with another row, in how many groups, and how many groups disagree."""
    value = "label" if ds["task"] == "classification" else "target"
    dups = (table.group_by("text").agg(pl.len().alias("rows"), pl.col(value).n_unique().alias("values"))
            .filter(pl.col("rows") > 1))
    return {"rows": int(dups["rows"].sum()), "groups": dups.height,
            f"conflicting_{value}_groups": int((dups["values"] > 1).sum())}


def texts_in_two_splits(table: pl.DataFrame) -> int:
    """Texts found in more than one split (0 for splits we make; a source or peer protocol may have some)."""
    return table.group_by("text").agg(pl.col("split").n_unique()).filter(pl.col("split") > 1).height


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
    # Units bind rows together in random splits; a split by column (e.g. by year), by the source or by a
    # published protocol may cut across them (prepare's manifest counts the texts it does).
    if ds["split"]["method"] == "random":
        if table["group"].null_count() < table.height:
            per_group = table.filter(pl.col("group").is_not_null()).group_by("group").agg(pl.col("split").n_unique())
            leaking = per_group.filter(pl.col("split") > 1)
            if leaking.height:
                raise DataError(f"{where}: group '{leaking['group'][0]}' sits in more than one split; a group's "
                                f"rows must all be in one")
        if texts_in_two_splits(table):
            raise DataError(f"{where}: {texts_in_two_splits(table)} text(s) sit in more than one split")
