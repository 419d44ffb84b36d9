"""The data layer: every loader on the shipped corpora and on small user files, splits, sha256 and prepare."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import yaml

from tunebench import config as tbconfig
from tunebench import families
from tunebench.data.loaders import DataError, load_dataset_table, verify_sha256
from tunebench.data.prepare import prepare_dataset
from tunebench.data.splits import (assign_splits, bootstrap_clusters, check_splits, duplicate_units, majority_labels,
                                   near_duplicate_key, near_duplicate_texts, repair_mojibake)

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


def write_fpb(folder, **lines_per_level):
    """FPB files in `folder`: the given lines per level (50agree=[...]); a level not given repeats the one below."""
    lines = []
    for level, name in [("50agree", "Sentences_50Agree.txt"), ("66agree", "Sentences_66Agree.txt"),
                        ("75agree", "Sentences_75Agree.txt"), ("allagree", "Sentences_AllAgree.txt")]:
        lines = lines_per_level.get(level, lines)
        (folder / name).write_bytes("".join(f"{x}\r\n" for x in lines).encode("latin-1"))


def test_fpb_splits_on_the_last_at_sign(tmp_path):
    write_fpb(tmp_path, **{"50agree": ["Write to ir@kone.com for the report .@neutral",
                                       "Kärkkäinen rose .@positive"]})
    table = load_dataset_table(fpb(path=str(tmp_path)), "fpb")
    assert table["text"].to_list() == ["Write to ir@kone.com for the report .", "Kärkkäinen rose ."]
    assert table["label"].to_list() == ["neutral", "positive"]
    assert table["source_line"].to_list() == [1, 2]


# Rows of the 50agree file by the highest level they reach: the file sizes of test_fpb_rows... differenced.
FPB_STRATA = {"allagree": 2264, "75agree": 3453 - 2264, "66agree": 4217 - 3453, "50agree": 4846 - 4217}


def test_fpb_agreement_strata_of_the_50agree_rows():
    table = load_dataset_table(fpb(), "fpb")
    assert dict(table.group_by("agreement").len().iter_rows()) == FPB_STRATA
    # Every row reaching a level is a row of that level's file: the rows at or above each level have exactly
    # the size and label counts of its file (so each 75agree row is also counted in 66agree and 50agree).
    at_or_above = []
    for level in ["allagree", "75agree", "66agree", "50agree"]:
        at_or_above.append(level)
        reached = table.filter(pl.col("agreement").is_in(at_or_above))
        own_file = load_dataset_table(fpb(level), "fpb")
        assert reached.height == own_file.height
        assert label_counts(reached) == label_counts(own_file)
        assert sorted(reached["text"].to_list()) == sorted(own_file["text"].to_list())


def test_fpb_agreement_strata_at_a_higher_configured_level():
    table = load_dataset_table(fpb("75agree"), "fpb")
    assert dict(table.group_by("agreement").len().iter_rows()) == {"allagree": 2264, "75agree": 1189}
    assert set(load_dataset_table(fpb("allagree"), "fpb")["agreement"]) == {"allagree"}


def test_fpb_agreement_counts_duplicate_rows_and_their_labels(tmp_path):
    """A sentence twice at 50% agreement and once at 66%: one row of each level. Of two rows that disagree on
    the label, only the one with the label given at the higher level reaches it."""
    twice, split = "Profit rose .@positive", "Sales were flat ."
    write_fpb(tmp_path, **{"50agree": [twice, f"{split}@neutral", twice, f"{split}@positive", "Loss grew .@negative"],
                           "66agree": [twice, f"{split}@positive", "Loss grew .@negative"],
                           "75agree": ["Loss grew .@negative"]})
    table = load_dataset_table(fpb(path=str(tmp_path)), "fpb")
    assert table["agreement"].to_list() == ["66agree", "50agree", "50agree", "66agree", "allagree"]


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


NESTED_DOC = {"meta": {"rows": 30}, "data": {"items": ROWS, "by/slash": ROWS[:3]}}


@pytest.mark.parametrize("pointer, expected", [("/data/items", 30), ("/data/by~1slash", 3)])
def test_table_loader_reads_a_list_nested_in_json(tmp_path, pointer, expected):
    path = tmp_path / "nested.json"
    path.write_text(json.dumps(NESTED_DOC))
    ds = resolve("user", {"loader": "table", "path": str(path), "task": "classification", "records": pointer,
                          "labels": ["neg", "neu", "pos"], "columns": {**MAPPING, "label": "sent"}})
    table = load_dataset_table(ds, "user")
    assert table["id"].to_list() == [f"d{i}" for i in range(expected)]
    assert table["label"].to_list() == [r["sent"] for r in ROWS[:expected]]


def test_table_loader_reads_an_object_keyed_by_id(tmp_path):
    keyed = {"sentences": {f"s{i:02d}": {"sentence": r["sentence"], "sent": r["sent"], "doc": r["doc"]}
                           for i, r in enumerate(ROWS)}}
    path = tmp_path / "keyed.json"
    path.write_text(json.dumps(keyed))
    base = {"loader": "table", "path": str(path), "task": "classification", "records": "/sentences",
            "labels": ["neg", "neu", "pos"]}
    table = load_dataset_table(resolve("k", {**base, "columns": {"text": "sentence", "label": "sent"}}), "k")
    assert table["id"].to_list() == [f"s{i:02d}" for i in range(30)]          # the key is the id
    assert table["text"].to_list() == [r["sentence"] for r in ROWS]
    with_id = resolve("k", {**base, "columns": {"text": "sentence", "label": "sent", "id": "doc"}})
    assert load_dataset_table(with_id, "k")["id"].to_list() == [r["doc"] for r in ROWS]   # unless columns.id


def test_empty_pointer_is_the_whole_document(tmp_path):
    path = tmp_path / "top.json"
    path.write_text(json.dumps({r["doc"]: r for r in ROWS}))
    ds = resolve("t", {"loader": "table", "path": str(path), "task": "classification", "records": "",
                       "labels": ["neg", "neu", "pos"], "columns": {"text": "sentence", "label": "sent"}})
    assert load_dataset_table(ds, "t")["id"].to_list() == [r["doc"] for r in ROWS]


def test_utf8_byte_order_mark_is_dropped_and_tabs_in_text_are_kept(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfid,text,label\r\n" + b"".join(
        f'r{i},"col\tumn {i}",{["neg", "neu", "pos"][i % 3]}\r\n'.encode() for i in range(9)))
    ds = resolve("b", {"loader": "table", "path": str(path), "task": "classification",
                       "labels": ["neg", "neu", "pos"], "columns": {"id": "id", "label": "label"}})
    table = load_dataset_table(ds, "b")
    assert table["id"][0] == "r0" and table["text"][0] == "col\tumn 0"


def test_table_loader_label_map_turns_raw_codes_into_names(tmp_path):
    path = write_rows(tmp_path / "codes.csv", [{"text": f"t{i}", "y": i % 2} for i in range(10)])
    ds = resolve("codes", {"loader": "table", "path": str(path), "task": "classification", "labels": ["no", "yes"],
                           "label_map": {"0": "no", "1": "yes"}, "columns": {"label": "y"}})
    assert load_dataset_table(ds, "codes")["label"].to_list() == ["no", "yes"] * 5


# ---- splits ----

def assert_stratified(table: pl.DataFrame, tolerance: float, splits=("train", "dev", "test")):
    overall = {k: v / table.height for k, v in label_counts(table).items()}
    for split in splits:
        part = table.filter(pl.col("split") == split)
        shares = {label: n / part.height for label, n in label_counts(part).items()}
        assert shares.keys() == overall.keys()
        for label, share in shares.items():
            assert abs(share - overall[label]) < tolerance, (split, label, share, overall[label])


def texts_in_two_splits(table: pl.DataFrame) -> list[str]:
    per_text = table.group_by("text").agg(pl.col("split").n_unique())
    return per_text.filter(pl.col("split") > 1)["text"].to_list()


def test_fpb_split_is_stratified_80_10_10():
    table = split_table(fpb())
    sizes = dict(table.group_by("split").len().iter_rows())
    # 4846 rows in 4835 units (11 near-duplicate pairs): 10% of the units in each held-out split, one of
    # them a pair in dev
    assert sizes == {"train": 3874, "dev": 487, "test": 485}
    assert_stratified(table, 0.005)


def test_fpb_duplicate_texts_never_sit_in_two_splits():
    table = split_table(fpb())
    repeated = table.group_by("text").len().filter(pl.col("len") > 1)
    assert (repeated.height, repeated["len"].sum()) == (8, 16)    # the release's duplicates are there to group
    assert texts_in_two_splits(table) == []


def planted_duplicates() -> pl.DataFrame:
    """60 distinct texts, plus each of 20 repeated 2-4 times (some with another label), plus a group joining
    two different texts."""
    labels = ["neg", "neu", "pos"]
    rows = [{"text": f"sentence {i}", "label": labels[i % 3], "group": None} for i in range(60)]
    for i in range(20):
        for k in range(1 + i % 3):
            rows.append({"text": f"sentence {i}", "label": labels[(i + (k == 1 and i % 2)) % 3], "group": None})
    rows[10]["group"] = rows[11]["group"] = "same-firm"
    return pl.DataFrame([dict(r, id=f"r{n}") for n, r in enumerate(rows)])


def test_planted_duplicates_and_groups_stay_in_one_split(tmp_path):
    path = tmp_path / "dupes.parquet"
    planted_duplicates().write_parquet(path)
    ds = resolve("d", {"loader": "table", "path": str(path), "task": "classification", "labels": ["neg", "neu", "pos"],
                       "columns": {"id": "id", "label": "label", "group": "group"}, "split": {"dev": 0.2, "test": 0.2}})
    for seed in range(5):
        table = split_table(dict(ds, split=dict(ds["split"], seed=seed)))
        assert texts_in_two_splits(table) == []
        assert table.filter(pl.col("group") == "same-firm")["split"].n_unique() == 1


def test_duplicate_units_join_texts_and_groups():
    table = pl.DataFrame({"text": ["a", "b", "a", "c", "d", "c"], "group": [None, "g", None, None, "g", None]})
    assert duplicate_units(table).tolist() == [0, 1, 0, 2, 1, 2]
    table = table.with_columns(pl.lit(None, dtype=pl.String).alias("group"))
    assert duplicate_units(table).tolist() == [0, 1, 0, 2, 3, 2]


@pytest.mark.parametrize("a, b", [
    ("Credit Suisse's Top Investor", "Credit Suisse’s top investor"),                 # curly apostrophe, case
    ("Credit Suisseâ€™s Top Investor", "Credit Suisse's Top Investor"),  # mojibake of ’
    ("Compagnie GÃƒÂ©nÃƒÂ©rale", "Compagnie Générale"),  # twice-encoded é (TFNS)
    ("$XLE: Sector Briefing https://t.co/FKDifSy17R", "$XLE: Sector Briefing https://t.co/rN4haqh9N9"),
    ("RT @alice: Oil rises www.example.com/a", "RT @bob: oil rises"),
    ("Profit rose .", "Profit  rose."),                                                  # FPB's spaced punctuation
    ("Ｓales “doubled”", 'sales "doubled"'),                                 # NFKC: fullwidth letters
    ("don’t sell", "dont sell"),
])
def test_near_duplicate_key_joins_variants_of_one_text(a, b):
    assert near_duplicate_key(a) == near_duplicate_key(b)


@pytest.mark.parametrize("a, b", [
    ("Profit rose 3.5%", "Profit rose 35%"),
    ("Write to ir@kone.com for the report", "Write to ir for the report"),   # an e-mail address is no handle
    ("https://t.co/abc", "https://t.co/xyz"),      # nothing but a link: its own key, not one shared empty key
    ("Sales rose", "Sales fell"),
])
def test_near_duplicate_key_keeps_different_texts_apart(a, b):
    assert near_duplicate_key(a) != near_duplicate_key(b)


def test_mojibake_repair_leaves_correct_text_alone():
    for text in ["Kärkkäinen rose", "España £100m €5", "café à la carte", "Partihallsf+Ârbindelsen"]:
        assert repair_mojibake(text) == text
    assert repair_mojibake("win Â£100m â€“ ok") == "win £100m – ok"


def test_duplicate_units_join_near_duplicates():
    table = pl.DataFrame({"text": ["Sales rose .", "sales rose", "Sales fell", "SALES ROSE https://t.co/x"],
                          "group": [None, None, None, None]}, schema_overrides={"group": pl.String})
    assert duplicate_units(table).tolist() == [0, 0, 1, 0]


def test_planted_near_duplicates_stay_in_one_split(tmp_path):
    """Each of 20 sentences has a variant in case, punctuation, quotes and link: no split of ours may cut a pair."""
    labels = ["neg", "neu", "pos"]
    rows = [{"text": f"Sentence {i}'s news", "label": labels[i % 3]} for i in range(60)]
    rows += [{"text": f"SENTENCE {i}’s news !! https://t.co/{i}x", "label": labels[i % 3]} for i in range(20)]
    path = tmp_path / "near.csv"
    pl.DataFrame([dict(r, id=f"r{n}") for n, r in enumerate(rows)]).write_csv(path)
    ds = resolve("d", {"loader": "table", "path": str(path), "task": "classification", "labels": labels,
                       "columns": {"id": "id", "label": "label"}, "split": {"dev": 0.2, "test": 0.2}})
    for seed in range(5):
        table = split_table(dict(ds, split=dict(ds["split"], seed=seed)))
        for i in range(20):
            assert table.filter(pl.col("id").is_in([f"r{i}", f"r{60 + i}"]))["split"].n_unique() == 1, (seed, i)
        assert not table["near_duplicate_of_train"].any()


def test_check_splits_refuses_a_near_duplicate_across_our_splits():
    ds = resolve("d", {"loader": "table", "path": "x.csv", "task": "classification", "labels": ["neg", "pos"],
                       "columns": {"label": "label"}})
    table = pl.DataFrame({"text": ["Sales rose .", "a", "b", "sales rose", "c", "d"],
                          "label": ["pos", "neg", "pos", "pos", "neg", "pos"],
                          "split": ["train", "train", "dev", "test", "test", "train"],
                          "group": [None] * 6}, schema_overrides={"group": pl.String})
    with pytest.raises(DataError, match="1 text\\(s\\) sit in more than one split, counting near-duplicates"):
        check_splits(table, ds, "d")
    check_splits(table, ds, "d", ours=("train", "dev"))   # test fixed by the source: flagged, not refused


def test_tfns_test_rows_with_a_near_duplicate_in_train_are_flagged_and_reported(tmp_path):
    """TFNS's valid file repeats no train tweet exactly, but 53 up to links, quotes and mojibake; dev, carved by
    us from the train file, shares no near-duplicate with train."""
    out = tmp_path / "results/data/tfns"
    table = prepare_dataset(tfns(), "tfns", out / "table.parquet", out / "splits.csv", out / "manifest.json")
    flagged = table.filter(pl.col("near_duplicate_of_train"))
    assert flagged.height == 53 and (flagged["split"] == "test").all()
    seen = {near_duplicate_key(t) for t in table.filter(pl.col("split") != "test")["text"]}
    test = table.filter(pl.col("split") == "test")
    assert [near_duplicate_key(t) in seen for t in test["text"]] == test["near_duplicate_of_train"].to_list()
    manifest = json.loads((out / "manifest.json").read_text())
    report = manifest["test_near_duplicates_of_train"]
    assert report["rows"] == 53 and manifest["texts_in_two_splits"] == 0
    assert len(report["examples"]) == 5
    for example in report["examples"]:
        assert example["test_text"] != example["seen_text"]
        assert near_duplicate_key(example["test_text"]) == near_duplicate_key(example["seen_text"])
    ours = table.filter(pl.col("split") != "test")
    keys = ours.with_columns(pl.Series("key", [near_duplicate_key(t) for t in ours["text"]]))
    assert keys.group_by("key").agg(pl.col("split").n_unique())["split"].max() == 1


def test_semeval_key_joins_nothing_beyond_identical_texts():
    table = split_table(semeval())
    assert near_duplicate_texts(table, semeval()) == {"rows": 2, "groups": 1, "conflicting_target_groups": 1,
                                                      "beyond_exact_pairs": 0}


def test_bootstrap_clusters_are_headlines_or_near_duplicate_units():
    """What the bootstrap resamples (config key cluster): SemEval's 116 test rows are 96 headlines; in FPB's
    test split one near-duplicate pair is one cluster."""
    table = split_table(semeval())
    test_ids = table.filter(pl.col("split") == "test")["id"].to_list()
    by_title = bootstrap_clusters(table, "group", "semeval")
    assert len(test_ids) == 116 and len({by_title[i] for i in test_ids}) == 96
    table = split_table(fpb())
    test = table.filter(pl.col("split") == "test")
    units = bootstrap_clusters(table, "duplicates", "fpb")
    assert len({units[i] for i in test["id"]}) == 484
    keys = test.with_columns(pl.Series("key", [near_duplicate_key(t) for t in test["text"]]))
    assert keys["key"].n_unique() == 484
    with pytest.raises(DataError, match="cluster 'group', but the table has no group"):
        bootstrap_clusters(table, "group", "fpb")


def test_majority_label_of_a_unit_and_ties_go_to_the_first_row():
    labels = np.array(["neu", "pos", "pos", "neg", "pos", "neg", "neu"], dtype=object)
    units = np.array([0, 0, 0, 1, 1, 2, 2])
    assert majority_labels(labels, units, np.array([0, 1, 2])).tolist() == ["pos", "neg", "neg"]


def test_splits_are_deterministic_for_a_seed_and_change_with_it():
    first, again = split_table(fpb()), split_table(fpb())
    assert first["split"].to_list() == again["split"].to_list()
    other = split_table(fpb(split={"seed": 1}))
    assert first["split"].to_list() != other["split"].to_list()


def test_tfns_test_set_is_the_valid_file_and_dev_comes_from_train():
    table = split_table(tfns())
    test = table.filter(pl.col("split") == "test")
    valid = pl.read_csv(REPO / "data/raw/tfns/sent_valid.csv")
    assert test["text"].to_list() == [t.strip() for t in valid["text"].to_list()]
    dev = table.filter(pl.col("split") == "dev")
    # 10% of the train file's units (scikit-learn rounds the held-out part up): its 9543 tweets form 9416, as
    # 127 rows join another's unit (3 identical texts, the rest up to links, quotes and mojibake); a unit goes
    # to dev with all its rows
    train_file = table.filter(pl.col("id").str.starts_with("train-"))
    units = dict(zip(train_file["id"], duplicate_units(train_file)))
    assert len(set(units.values())) == 9416 and len({units[i] for i in dev["id"]}) == 942
    assert dev["id"].str.starts_with("train-").all()
    assert texts_in_two_splits(table.filter(pl.col("split") != "test")) == []


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


# ---- the evaluation subset of the test split ----

def test_test_subset_is_a_fixed_stratified_part_of_the_test_split():
    table = split_table(fpb(test_subset={"size": 200, "seed": 3}))
    subset = table.filter(pl.col("test_subset"))
    assert subset.height == 200 and (subset["split"] == "test").all()
    test = table.filter(pl.col("split") == "test")
    for label, n in label_counts(test).items():
        assert abs(label_counts(subset)[label] - 200 * n / test.height) <= 1, label
    again = split_table(fpb(test_subset={"size": 200, "seed": 3}))
    assert again["test_subset"].to_list() == table["test_subset"].to_list()
    other_seed = split_table(fpb(test_subset={"size": 200, "seed": 4}))
    assert other_seed["split"].to_list() == table["split"].to_list()         # the split itself is unchanged
    assert other_seed["test_subset"].to_list() != table["test_subset"].to_list()


def test_test_subset_larger_than_the_test_split_marks_all_of_it():
    table = split_table(fpb("allagree", test_subset={"size": 10_000}))
    assert table["test_subset"].to_list() == (table["split"] == "test").to_list()


def test_test_subset_of_a_regression_dataset_is_stratified_by_target_tercile():
    table = split_table(semeval(test_subset={"size": 30, "seed": 0}))
    test = table.filter(pl.col("split") == "test")
    low, high = np.quantile(test["target"].to_numpy(), [1 / 3, 2 / 3])
    subset = table.filter(pl.col("test_subset"))["target"].to_numpy()
    assert len(subset) == 30
    per_tercile = [(subset < low).sum(), ((subset >= low) & (subset <= high)).sum(), (subset > high).sum()]
    assert all(9 <= n <= 11 for n in per_tercile), per_tercile


def test_no_test_subset_column_unless_asked_for():
    assert "test_subset" not in split_table(fpb("allagree")).columns


# ---- published splits of other studies ----

def test_fingpt_split_is_the_datasets_25_percent_test_with_seed_42():
    table = split_table(fpb(split={"method": "fingpt"}))
    sizes = dict(table.group_by("split").len().iter_rows())
    assert sizes["test"] == 1212 and sizes["train"] + sizes["dev"] == 3634     # ceil(0.25 × 4846) test rows
    assert 363 <= sizes["dev"] <= 366                                           # 10% of FinGPT's train
    # datasets' train_test_split draws numpy's default_rng(seed).permutation and takes the head as test.
    expected = np.sort(np.random.default_rng(42).permutation(4846)[:1212])
    assert np.flatnonzero((table["split"] == "test").to_numpy()).tolist() == expected.tolist()
    assert_stratified(table, 0.03)


def test_fingpt_split_only_on_the_50agree_file():
    with pytest.raises(DataError, match="FinGPT's split is defined on the 4846 rows of the 50agree file"):
        split_table(fpb("allagree", split={"method": "fingpt"}))


@pytest.mark.parametrize("agreement, train_and_dev, test", [("50agree", 3392, 1454), ("allagree", 1584, 680)])
def test_helm_split_is_the_last_30_percent_after_shuffling_lines_with_seed_121(agreement, train_and_dev, test):
    table = split_table(fpb(agreement, split={"method": "helm"}))
    sizes = dict(table.group_by("split").len().iter_rows())
    assert (sizes["train"] + sizes["dev"], sizes["test"]) == (train_and_dev, test)   # int(0.7 × lines) train
    # HELM's own steps on the file's lines (financial_phrasebank_scenario.py), compared by sentence and label.
    name = {"50agree": "Sentences_50Agree.txt", "allagree": "Sentences_AllAgree.txt"}[agreement]
    with open(REPO / "data/raw/fpb" / name, encoding="iso-8859-1") as f:
        lines = list(f.readlines())
    random.Random(121).shuffle(lines)
    helm_test = sorted(tuple(x.strip() for x in line.strip().rsplit("@", 1)) for line in lines[int(len(lines) * 0.7):])
    ours = sorted(table.filter(pl.col("split") == "test").select("text", "label").iter_rows())
    assert ours == helm_test


def test_peer_splits_need_the_fpb_loader(tmp_path):
    ds = semeval(split={"method": "helm"})
    with pytest.raises(DataError, match="split method 'helm'.*use loader fpb"):
        split_table(ds)


# ---- sha256 and prepare ----

FPB_SHA256 = {
    "Sentences_50Agree.txt": "bb1b4df6de05d50b146f87a9d4d024b69f947066445f2384f014c3564c1612c8",
    "Sentences_66Agree.txt": "725adb1de7d33977b0c2f63c33d5ad60e3c623b916856e18663915dfe47b6981",
    "Sentences_75Agree.txt": "a7ca39fb9dc60aed1c323ee635494aed4acdfc05e0349a9e74367502325303a4",
    "Sentences_AllAgree.txt": "5fb370b3005b9a2759f708849a691ad2e4d2593d4c995c1afde229398a516594",
}


def test_sha256_of_the_shipped_files_verifies():
    assert verify_sha256(fpb("allagree", sha256=FPB_SHA256)) == FPB_SHA256


def test_the_configs_pin_every_fpb_file_they_read():
    for name in ("config.yaml", "paper.yaml", "smoke.yaml"):
        ds = tbconfig.load(REPO / "config" / name)["datasets"]["fpb"]
        assert ds["sha256"] == FPB_SHA256, name


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
    table = prepare_dataset(fpb(test_subset={"size": 100}), "fpb", out / "table.parquet", out / "splits.csv",
                            out / "manifest.json")
    written = pl.read_parquet(out / "table.parquet")
    assert written.equals(table)
    assert written.columns == ["id", "text", "label", "agreement", "group", "split", "near_duplicate_of_train",
                               "test_subset", "source_line"]
    assert not written["near_duplicate_of_train"].any()   # a split we make puts no near-duplicate in test
    splits = pl.read_csv(out / "splits.csv")
    assert splits.columns == ["id", "split", "test_subset", "agreement"]
    assert splits.equals(written.select("id", "split", "test_subset", "agreement"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 4846
    assert manifest["raw_sha256"] == FPB_SHA256
    assert manifest["rows_per_split"] == {"dev": 487, "test": 485, "train": 3874}
    assert manifest["rows_per_label"]["train"]["negative"] > 0
    assert manifest["duplicate_texts"] == {"rows": 16, "groups": 8, "conflicting_label_groups": 2}
    # The key joins 3 pairs of different texts beyond the 8 identical pairs (in spacing, case and a comma).
    assert manifest["near_duplicate_texts"] == {"rows": 22, "groups": 11, "conflicting_label_groups": 2,
                                                "beyond_exact_pairs": 3}
    assert manifest["texts_in_two_splits"] == 0
    assert manifest["test_near_duplicates_of_train"] == {"rows": 0, "other_label": 0, "examples": []}
    assert sum(manifest["rows_per_agreement"]["test"].values()) == 485
    assert manifest["test_subset"]["rows"] == 100 and sum(manifest["test_subset"]["rows_per_label"].values()) == 100
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "splits.csv", "table.parquet"]


def test_prepare_manifest_counts_texts_a_peer_split_puts_on_both_sides(tmp_path):
    out = tmp_path / "results/data/fpb"
    table = prepare_dataset(fpb(split={"method": "fingpt"}), "fpb", out / "table.parquet", out / "splits.csv",
                            out / "manifest.json")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split_method"] == "fingpt"
    assert manifest["texts_in_two_splits"] == len(texts_in_two_splits(table)) > 0
    assert "test_subset" not in pl.read_csv(out / "splits.csv").columns


def test_prepare_imports_no_torch(tmp_path):
    """prepare runs in the light data environment: no split, not even FinGPT's (datasets), may load torch."""
    script = f"""
import sys
sys.path.insert(0, {str(REPO / "workflow")!r})
from tunebench import config
from tunebench.data.prepare import prepare_dataset
ds = config.load({str(REPO / "config/config.yaml")!r})["datasets"]["fpb"]
ds["split"] = {{**ds["split"], "method": "fingpt"}}
prepare_dataset(ds, "fpb", {str(tmp_path / "t.parquet")!r}, {str(tmp_path / "s.csv")!r}, {str(tmp_path / "m.json")!r})
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, capture_output=True, text=True)
    assert (tmp_path / "t.parquet").exists()


def test_every_published_anchor_names_a_split_method_we_have():
    anchors = yaml.safe_load((REPO / "data/reference/published.yaml").read_text())["anchors"]
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    methods = set(schema["$defs"]["dataset"]["properties"]["split"]["properties"]["method"]["enum"])
    for a in anchors:
        assert a["split_method"] in methods | {"other"}, a
        if a["split_method"] in ("fingpt", "helm"):
            assert a["dataset"] == "fpb", a
        if a["split_method"] == "given":
            assert a["dataset"] == "tfns", a
    assert {a["split_method"] for a in anchors} >= {"fingpt", "given", "other"}
    # `ours` names tunebench strategies (the report sets our runs of them beside the figure)
    strategies = {s for fam in families.families() for s in fam.strategies}
    named = [entry.split()[0] for a in anchors for entry in a.get("ours", [])]
    assert named and set(named) <= strategies, set(named) - strategies


@pytest.mark.parametrize("key, value, fragment", [
    ("records", "data/items", "'datasets.d.records'"),
    ("test_subset", {"seed": 1}, "'datasets.d.test_subset'"),
    ("test_subset", {"size": 0}, "'datasets.d.test_subset.size'"),
    ("split", {"method": "finben"}, "'datasets.d.split.method'"),
])
def test_new_dataset_keys_are_checked_by_the_schema(key, value, fragment):
    with pytest.raises(tbconfig.ConfigError, match=fragment):
        resolve("d", {"loader": "fpb", "path": "data/raw/fpb", "task": "classification", "labels": FPB_LABELS,
                      key: value})


def test_new_dataset_keys_default_to_none():
    ds = fpb()
    assert ds["records"] is None and ds["test_subset"] is None
    assert fpb(test_subset={"size": 5})["test_subset"] == {"size": 5, "seed": 0}
