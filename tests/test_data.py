"""The data layer: every loader on the shipped corpora and on small user files, splits, sha256 and prepare."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from tunebench import config as tbconfig
from tunebench.data.loaders import DataError, load_dataset_table, verify_sha256
from tunebench.data.prepare import prepare_dataset
from tunebench.data.splits import assign_splits

from conftest import REPO

FPB_LABELS = ["negative", "neutral", "positive"]


def resolve(name: str, dataset: dict) -> dict:
    """The dataset entry with every default filled, exactly as a study would see it."""
    config = tbconfig.validate({"datasets": {name: dataset}, "methods": {"m": {"strategy": "majority"}},
                                "study": [{"datasets": [name], "methods": ["m"]}]})
    return config["datasets"][name]


def fpb(agreement="50agree", **extra) -> dict:
    return resolve("fpb", {"loader": "fpb", "path": str(REPO / "data/raw/fpb"), "agreement": agreement,
                           "task": "classification", "labels": FPB_LABELS, **extra})


def tfns(**extra) -> dict:
    return resolve("tfns", {"loader": "tfns", "path": str(REPO / "data/raw/tfns"), "task": "classification",
                            "labels": ["bearish", "bullish", "neutral"],
                            "label_map": {"0": "bearish", "1": "bullish", "2": "neutral"},
                            "split": {"method": "given"}, **extra})


def semeval(**extra) -> dict:
    return resolve("semeval17_headlines", {"loader": "semeval17", "task": "regression",
                                           "path": str(REPO / "data/raw/semeval17_headlines/"
                                                       "SemEval2017Task5Headlines.json"), **extra})


def split_table(ds: dict, name="d") -> pl.DataFrame:
    return assign_splits(load_dataset_table(ds, name), ds, name)


def label_counts(table: pl.DataFrame) -> dict:
    return dict(table.group_by("label").len().iter_rows())


# ---- the shipped corpora ----

@pytest.mark.parametrize("agreement, rows, counts", [
    ("50agree", 4846, {"neutral": 2879, "positive": 1363, "negative": 604}),
    ("66agree", 4217, {"neutral": 2535, "positive": 1168, "negative": 514}),
    ("75agree", 3453, {"neutral": 2146, "positive": 887, "negative": 420}),
    ("allagree", 2264, {"neutral": 1391, "positive": 570, "negative": 303}),
])
def test_fpb_rows_and_labels_per_agreement_level(agreement, rows, counts):
    table = load_dataset_table(fpb(agreement), "fpb")
    assert table.height == rows
    assert label_counts(table) == counts
    assert table["id"].n_unique() == rows


def test_fpb_decodes_latin1():
    table = load_dataset_table(fpb(), "fpb")
    assert table["text"].str.contains("ä").any()
    assert not table["text"].str.contains("Ã").any()


def test_fpb_splits_on_the_last_at_sign(tmp_path):
    (tmp_path / "Sentences_50Agree.txt").write_bytes(
        "Write to ir@kone.com for the report .@neutral\r\nKärkkäinen rose .@positive\r\n".encode("latin-1"))
    table = load_dataset_table(fpb(path=str(tmp_path)), "fpb")
    assert table["text"].to_list() == ["Write to ir@kone.com for the report .", "Kärkkäinen rose ."]
    assert table["label"].to_list() == ["neutral", "positive"]
    assert table["source_line"].to_list() == [1, 2]


def test_tfns_train_and_valid_files_with_label_map():
    table = load_dataset_table(tfns(), "tfns")
    train = table.filter(pl.col("given_split") == "train")
    valid = table.filter(pl.col("given_split") == "test")
    assert (train.height, valid.height) == (9543, 2388)
    assert label_counts(train) == {"bearish": 1442, "bullish": 1923, "neutral": 6178}
    assert label_counts(valid) == {"bearish": 347, "bullish": 475, "neutral": 1566}


def test_semeval_rows_targets_and_groups():
    table = load_dataset_table(semeval(), "semeval17_headlines")
    assert table.height == 1142
    assert table["id"].n_unique() == 1142
    assert table["group"].n_unique() == 960
    assert -1 <= table["target"].min() < 0 < table["target"].max() <= 1
    # The company is part of the input: one headline scored for two companies is two different texts.
    assert table["text"].n_unique() > table["group"].n_unique()


# ---- the generic table loader ----

ROWS = [
    {"doc": f"d{i}", "sentence": f"text number {i}", "sent": ["neg", "neu", "pos"][i % 3], "score": i / 10 - 1,
     "firm": f"firm{i % 4}", "part": "test" if i >= 24 else "train", "year": 2021 if i >= 24 else 2015 + i % 6}
    for i in range(30)
]
MAPPING = {"text": "sentence", "id": "doc", "group": "firm", "prefix": "firm"}


def write_rows(path, rows=ROWS):
    if path.suffix == ".csv":
        pl.DataFrame(rows).write_csv(path)
    elif path.suffix == ".parquet":
        pl.DataFrame(rows).write_parquet(path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".json"])
def test_table_loader_classification_with_column_mapping(tmp_path, suffix):
    path = write_rows(tmp_path / f"user{suffix}")
    ds = resolve("user", {"loader": "table", "path": str(path), "task": "classification",
                          "labels": ["neg", "neu", "pos"], "columns": {**MAPPING, "label": "sent"}})
    table = load_dataset_table(ds, "user")
    assert table.height == 30
    assert table["id"].to_list() == [f"d{i}" for i in range(30)]
    assert table["text"][5] == "firm1: text number 5"   # the prefix column is prepended
    assert table["label"].to_list() == [r["sent"] for r in ROWS]
    assert table["group"][5] == "firm1"


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".json"])
def test_table_loader_regression_with_given_split_column(tmp_path, suffix):
    path = write_rows(tmp_path / f"user{suffix}")
    ds = resolve("user", {"loader": "table", "path": str(path), "task": "regression",
                          "columns": {"text": "sentence", "target": "score", "split": "part"},
                          "split": {"method": "given"}})
    table = split_table(ds, "user")
    assert table["target"].to_list() == pytest.approx([r["score"] for r in ROWS])
    assert table["id"].n_unique() == 30      # no id column: the row number
    assert table.filter(pl.col("split") == "test")["text"].to_list() == [f"text number {i}" for i in range(24, 30)]
    assert set(table["split"]) == {"train", "dev", "test"}


def test_table_loader_label_map_turns_raw_codes_into_names(tmp_path):
    path = write_rows(tmp_path / "codes.csv", [{"text": f"t{i}", "y": i % 2} for i in range(10)])
    ds = resolve("codes", {"loader": "table", "path": str(path), "task": "classification", "labels": ["no", "yes"],
                           "label_map": {"0": "no", "1": "yes"}, "columns": {"label": "y"}})
    assert load_dataset_table(ds, "codes")["label"].to_list() == ["no", "yes"] * 5


# ---- splits ----

def test_fpb_split_is_stratified_80_10_10():
    table = split_table(fpb())
    sizes = dict(table.group_by("split").len().iter_rows())
    assert sizes == {"train": 3876, "dev": 485, "test": 485}
    overall = {k: v / table.height for k, v in label_counts(table).items()}
    for split in ("train", "dev", "test"):
        part = table.filter(pl.col("split") == split)
        for label, share in label_counts(part).items():
            assert abs(share / part.height - overall[label]) < 0.005, (split, label)


def test_splits_are_deterministic_for_a_seed_and_change_with_it():
    first, again = split_table(fpb()), split_table(fpb())
    assert first["split"].to_list() == again["split"].to_list()
    other = split_table(fpb(split={"seed": 1}))
    assert first["split"].to_list() != other["split"].to_list()


def test_no_id_sits_in_two_splits():
    table = split_table(tfns())
    assert table.group_by("id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert table["id"].n_unique() == table.height


def test_tfns_test_set_is_the_valid_file_and_dev_comes_from_train():
    table = split_table(tfns())
    test = table.filter(pl.col("split") == "test")
    valid = pl.read_csv(REPO / "data/raw/tfns/sent_valid.csv")
    assert test["text"].to_list() == [t.strip() for t in valid["text"].to_list()]
    dev = table.filter(pl.col("split") == "dev")
    assert dev.height == math.ceil(0.1 * 9543)   # scikit-learn rounds the held-out part up
    assert dev["id"].str.starts_with("train-").all()


def test_semeval_split_is_grouped_by_title():
    table = split_table(semeval())
    splits_per_title = table.group_by("group").agg(pl.col("split").n_unique())
    assert splits_per_title["split"].max() == 1
    sizes = dict(table.group_by("split").len().iter_rows())
    assert 0.07 < sizes["test"] / table.height < 0.13 and 0.07 < sizes["dev"] / table.height < 0.13


def test_split_by_column_values(tmp_path):
    """Train on years up to 2020, test on 2021 (as Häffner et al. did)."""
    path = write_rows(tmp_path / "years.csv")
    ds = resolve("years", {"loader": "table", "path": str(path), "task": "regression",
                           "columns": {"text": "sentence", "target": "score"},
                           "split": {"method": "column", "column": "year", "test_values": [2021]}})
    table = split_table(ds, "years")
    years = {r["sentence"]: r["year"] for r in ROWS}
    for text, split in table.select("text", "split").iter_rows():
        assert (split == "test") == (years[text] == 2021)
    assert (table["split"] == "dev").sum() == math.ceil(0.1 * 24)   # dev carved from the 24 train rows


# ---- sha256 and prepare ----

def test_sha256_of_the_shipped_files_verifies():
    digests = verify_sha256(fpb("allagree", sha256={
        "Sentences_AllAgree.txt": "5fb370b3005b9a2759f708849a691ad2e4d2593d4c995c1afde229398a516594"}))
    assert digests == {"Sentences_AllAgree.txt": "5fb370b3005b9a2759f708849a691ad2e4d2593d4c995c1afde229398a516594"}


def test_a_changed_byte_fails_the_sha256_check(tmp_path):
    raw = (REPO / "data/raw/semeval17_headlines/SemEval2017Task5Headlines.json").read_bytes()
    changed = tmp_path / "SemEval2017Task5Headlines.json"
    changed.write_bytes(raw.replace(b"0.", b"1.", 1))
    ds = semeval(path=str(changed), sha256={
        "SemEval2017Task5Headlines.json": "dc50bfa39b13075e80ead2372f843ae13e802e07e9c45272c9b1397611869ea4"})
    with pytest.raises(DataError, match=r"SemEval2017Task5Headlines.json: sha256 is [0-9a-f]{64}, config expects dc50"):
        verify_sha256(ds)


def test_prepare_writes_table_splits_and_manifest(tmp_path):
    out = tmp_path / "results/data/fpb"
    table = prepare_dataset(fpb("allagree"), "fpb", out / "table.parquet", out / "splits.csv", out / "manifest.json")
    written = pl.read_parquet(out / "table.parquet")
    assert written.equals(table)
    assert written.columns == ["id", "text", "label", "group", "split", "source_line"]
    splits = pl.read_csv(out / "splits.csv")
    assert splits.columns == ["id", "split"]
    assert splits.equals(written.select("id", "split"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 2264
    assert manifest["raw_sha256"] == {
        "Sentences_AllAgree.txt": "5fb370b3005b9a2759f708849a691ad2e4d2593d4c995c1afde229398a516594"}
    assert sum(manifest["rows_per_split"].values()) == 2264
    assert manifest["rows_per_label"]["train"]["negative"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "splits.csv", "table.parquet"]
