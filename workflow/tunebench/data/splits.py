"""Deterministic train/dev/test splits: stratified, given by the source, chosen by a column, or a published
protocol (peer_splits); then, optionally, a fixed evaluation subset of the test split.

Rows with the same near-duplicate key (`near_duplicate_key`: the text up to case, Unicode form, mojibake, quotes,
punctuation, spacing, URLs and @handles), or the same `group`, form one unit that never straddles a split we
make: the same sentence in train and test would be scored as seen, and a retweet with another link is the same
sentence. Units are split stratified by their majority label. Where the source or a published protocol fixes the
test rows, the test rows with a near-duplicate among the rows models learn from are flagged instead
(`near_duplicate_of_train`), so that metrics can be given without them.
"""

from __future__ import annotations

import re
import unicodedata
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
    # The splits whose rows we choose, so that units hold them together: all three for random, dev and the
    # train it is carved from otherwise, none where the source or the split column gives dev too.
    ours = ("train", "dev", "test") if method == "random" else ()
    if not (split == "dev").any():
        train_idx = np.flatnonzero(split == "train")
        fraction = cfg["dev"] / (1 - (cfg["test"] if method == "random" else 0))
        dev_idx = _carve(table, units, train_idx, fraction, seed, ds, where)
        split[dev_idx] = "dev"
        ours = ours or ("train", "dev")
    out = table.with_columns(pl.Series("split", split.astype(str)))
    out = out.with_columns(pl.Series("near_duplicate_of_train", near_duplicate_of_train(out)))
    if ds.get("test_subset") is not None:
        out = out.with_columns(pl.Series("test_subset", mark_test_subset(out, ds, name)))
    check_splits(out, ds, name, ours)
    return out


def duplicate_units(table: pl.DataFrame) -> np.ndarray:
    """A unit number per row: rows with the same near-duplicate key or the same group share one (the connected
    components of rows linked through their keys and groups), numbered in the order of each unit's first row."""
    n = table.height
    _, key_node = np.unique(near_duplicate_keys(table), return_inverse=True)
    edges = [(np.arange(n), n + key_node)]
    groups = table["group"].to_numpy()
    has_group = np.array([g is not None for g in groups], dtype=bool)
    if has_group.any():
        _, group_node = np.unique(groups[has_group].astype(str), return_inverse=True)
        edges.append((np.flatnonzero(has_group), n + key_node.max() + 1 + group_node))
    rows = np.concatenate([a for a, _ in edges])
    cols = np.concatenate([b for _, b in edges])
    size = int(cols.max()) + 1
    _, component = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size)),
                                        directed=False)
    return _number_by_first_row(component[:n])


# ---- near-duplicate keys ------------------------------------------------------------------------------------

URL = re.compile(r"(?:https?://|www\.)\S+|(?<![\w.])t\.co/\S+", re.IGNORECASE)
HANDLE = re.compile(r"(?<![\w@])@\w+")      # @name, but not the domain of ir@kone.com
QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
                        "\u00b4": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"'})
# The byte each character stands for when UTF-8 bytes were decoded as Windows-1252 (latin-1 for the five bytes
# cp1252 leaves undefined, which such decoders pass through as U+0081 etc.): 'â€™' is the bytes of '’'.
_CP1252_BYTE = {}
for _b in range(0x80, 0x100):
    try:
        _CP1252_BYTE[bytes([_b]).decode("cp1252")] = _b
    except UnicodeDecodeError:
        _CP1252_BYTE[chr(_b)] = _b
# A UTF-8 character outside ASCII is 2-4 bytes, all >= 0x80: mojibake is a run of at least two such characters.
_MOJIBAKE_RUN = re.compile("[" + re.escape("".join(_CP1252_BYTE)) + "]{2,}")


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 read as Windows-1252 ('â€™' → '’', 'Ã©' → 'é'), also twice over ('ÃƒÂ©' → 'é', found in
    TFNS). A run is re-decoded only where its bytes are valid UTF-8, which genuine latin-1 text ('Kärkkäinen',
    'ä' being byte 0xE4 followed by ASCII) practically never is; so correct text passes unchanged."""
    def redecode(match: re.Match) -> str:
        try:
            return bytes(_CP1252_BYTE[c] for c in match.group()).decode("utf-8")
        except UnicodeDecodeError:
            return match.group()

    for _ in range(3):  # each round undoes one layer of double encoding
        repaired = _MOJIBAKE_RUN.sub(redecode, text)
        if repaired == text:
            break
        text = repaired
    return text


def near_duplicate_key(text: str) -> str:
    """The text as a reader compares two sentences: mojibake repaired, Unicode NFKC, casefolded, without URLs
    and @handles (tweets of one headline differ in their t.co links and who posted them), curly quotes made
    straight and apostrophes inside words dropped (don’t = don't = dont), punctuation and runs of spaces
    collapsed to one space. A text that is nothing but links and handles keeps its own text as key, so such
    texts are not all lumped into one unit."""
    key = unicodedata.normalize("NFKC", repair_mojibake(text)).casefold()
    key = HANDLE.sub(" ", URL.sub(" ", key)).translate(QUOTES)
    key = re.sub(r"(?<=\w)'(?=\w)", "", key)
    key = " ".join(re.sub(r"[^\w\s]|_", " ", key).split())
    return key or text


def near_duplicate_keys(table: pl.DataFrame) -> np.ndarray:
    return np.array([near_duplicate_key(t) for t in table["text"].to_list()], dtype=object)


def bootstrap_clusters(table: pl.DataFrame, how: str, where: str) -> dict[str, str]:
    """Each row id's cluster for the bootstrap (config key datasets.<name>.cluster): `group`, the row's group
    (a row without one is a cluster of its own), or `duplicates`, the row's unit (near-duplicate texts, joined
    through their groups)."""
    ids = table["id"].to_list()
    if how == "group":
        if table["group"].null_count() == table.height:
            raise DataError(f"{where}: cluster 'group', but the table has no group (the loader sets none; "
                            f"columns.group names one for loaders table and hf)")
        labels = [f"row {i}" if g is None else f"group {g}" for i, g in zip(ids, table["group"].to_list())]
    elif how == "duplicates":
        labels = [f"unit {u}" for u in duplicate_units(table)]
    else:
        raise ValueError(f"{where}: unknown cluster '{how}'")
    return dict(zip(ids, labels))


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
    return _shared(table, ds, pl.col("text"))


def near_duplicate_texts(table: pl.DataFrame, ds: dict) -> dict:
    """As duplicate_texts, by near-duplicate key; `beyond_exact_pairs` counts the pairs of different texts that
    share a key (what the key merges beyond identical texts)."""
    keyed = table.with_columns(pl.Series("key", near_duplicate_keys(table), dtype=pl.String))
    counts = _shared(keyed, ds, pl.col("key"))
    texts = keyed.group_by("key").agg(pl.col("text").n_unique())["text"]
    counts["beyond_exact_pairs"] = int((texts * (texts - 1) // 2).sum())
    return counts


def _shared(table: pl.DataFrame, ds: dict, by: pl.Expr) -> dict:
    value = "label" if ds["task"] == "classification" else "target"
    dups = (table.group_by(by).agg(pl.len().alias("rows"), pl.col(value).n_unique().alias("values"))
            .filter(pl.col("rows") > 1))
    return {"rows": int(dups["rows"].sum()), "groups": dups.height,
            f"conflicting_{value}_groups": int((dups["values"] > 1).sum())}


def texts_in_two_splits(table: pl.DataFrame) -> int:
    """Texts found in more than one split (0 for splits we make; a source or peer protocol may have some)."""
    return table.group_by("text").agg(pl.col("split").n_unique()).filter(pl.col("split") > 1).height


def near_duplicate_of_train(table: pl.DataFrame) -> np.ndarray:
    """True for a test row whose near-duplicate key is also a train or dev row's: a text the models may have
    learned from (dev picks their settings). Always False for a random split, which never cuts a unit."""
    keys = near_duplicate_keys(table)
    test = table["split"].to_numpy() == "test"
    return test & np.isin(keys, keys[~test])


def near_duplicates_in_test(table: pl.DataFrame, examples: int = 5) -> dict:
    """The test rows flagged near_duplicate_of_train: how many, with their labels or targets, and a few
    examples beside the train or dev text they repeat (for the manifest)."""
    value = "label" if "label" in table.columns else "target"
    keyed = table.with_columns(pl.Series("key", near_duplicate_keys(table), dtype=pl.String))
    flagged = keyed.filter(pl.col("near_duplicate_of_train"))
    seen = (keyed.filter(pl.col("split") != "test")
            .select("key", pl.col("text").alias("seen_text"), pl.col(value).alias(f"seen_{value}"))
            .unique("key", keep="first", maintain_order=True))
    pairs = flagged.join(seen, on="key", how="left", maintain_order="left")
    return {
        "rows": flagged.height,
        f"other_{value}": int((pairs[value] != pairs[f"seen_{value}"]).sum()),
        "examples": [{"id": r["id"], "test_text": r["text"], "seen_text": r["seen_text"]}
                     for r in pairs.head(examples).iter_rows(named=True)],
    }


def check_splits(table: pl.DataFrame, ds: dict, name: str, ours=("train", "dev", "test")) -> None:
    """Every split present, every class in train, and no unit cut across the splits `ours` that we chose the
    rows of (assign_splits says which: a split by column, by the source or by a published protocol may cut
    across units, and prepare's manifest counts what it does)."""
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
    mine = table.filter(pl.col("split").is_in(list(ours)))
    if mine["group"].null_count() < mine.height:
        per_group = mine.filter(pl.col("group").is_not_null()).group_by("group").agg(pl.col("split").n_unique())
        leaking = per_group.filter(pl.col("split") > 1)
        if leaking.height:
            raise DataError(f"{where}: group '{leaking['group'][0]}' sits in more than one split; a group's "
                            f"rows must all be in one")
    per_key = (mine.with_columns(pl.Series("key", near_duplicate_keys(mine), dtype=pl.String))
               .group_by("key").agg(pl.col("split").n_unique(), pl.col("text").first()))
    leaking = per_key.filter(pl.col("split") > 1)
    if leaking.height:
        raise DataError(f"{where}: {leaking.height} text(s) sit in more than one split, counting near-duplicates "
                        f"(e.g. {leaking['text'][0][:80]!r})")
