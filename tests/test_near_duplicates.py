"""Metrics without the near-duplicates of train in test (a test split the source fixes, such as TFNS's): the
aggregate's *_no_near_dup columns and the report's section on them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from sklearn.metrics import f1_score

from test_report import LABELS, REPO, write_run
from tunebench.evaluation.aggregate import aggregate_runs
from tunebench.evaluation.report import build_report

# Ten test rows, the first two near-duplicates of a train text. Method `a` is right on both of them and on 4 of
# the other 8: accuracy 0.6 on all rows, 0.5 without them. `b` is wrong on both and right on 6 of the 8.
GOLD = ["negative", "positive", "neutral", "neutral", "positive", "negative", "neutral", "positive", "neutral",
        "negative"]
PRED_A = ["negative", "positive", "neutral", "neutral", "positive", "negative", "positive", "neutral", "negative",
          "positive"]
PRED_B = ["positive", "negative", "neutral", "neutral", "positive", "negative", "neutral", "positive", "negative",
          "positive"]
FLAGGED = [True, True] + [False] * 8


def write_table(root: Path, dataset: str, flagged: list[bool], manifest: dict | None = None) -> Path:
    """The dataset's table.parquet (test rows only, ids as write_run makes them) and its manifest.json."""
    folder = root / "data" / dataset
    folder.mkdir(parents=True)
    ids = [f"{dataset}-{i:04d}" for i in range(len(flagged))]
    pl.DataFrame({"id": ids, "text": [f"text {i}" for i in range(len(ids))], "label": GOLD[:len(ids)],
                  "split": ["test"] * len(ids), "near_duplicate_of_train": flagged}
                 ).write_parquet(folder / "table.parquet")
    (folder / "manifest.json").write_text(json.dumps(manifest or {}))
    return folder / "table.parquet"


def with_table(run_dir: Path, table: Path) -> Path:
    """The run's metrics.json names the table it read, as runner.execute records it."""
    record = json.loads((run_dir / "metrics.json").read_text())
    record["data"] = {"table": str(table)}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory):
    root = tmp_path_factory.mktemp("near_dup")
    manifest = {"rows": 45, "split_method": "given", "rows_per_split": {"train": 30, "dev": 5, "test": 10},
                "near_duplicate_texts": {"rows": 4, "groups": 2},
                "test_near_duplicates_of_train": {
                    "rows": 2, "other_label": 1,
                    "examples": [{"id": "tfns-0000", "test_text": "Stock *up* https://t.co/a",
                                  "seen_text": "stock up https://t.co/b"},
                                 {"id": "tfns-0001", "test_text": "Shares | fall", "seen_text": "shares fall!"}]}}
    tables = {"tfns": write_table(root, "tfns", FLAGGED, manifest),
              # a split we make: nothing flagged
              "fpb": write_table(root, "fpb", [False] * 10, {"rows": 40, "split_method": "random",
                                                             "rows_per_split": {"train": 25, "dev": 5, "test": 10},
                                                             "test_near_duplicates_of_train": {"rows": 0}})}
    dirs = [with_table(write_run(root, "tfns", "none", "a", 0, GOLD, PRED_A, strategy="full"), tables["tfns"]),
            with_table(write_run(root, "tfns", "none", "b", 0, GOLD, PRED_B, strategy="lm_dictionary"), tables["tfns"]),
            with_table(write_run(root, "tfns", "none", "b", 1, GOLD, PRED_A, strategy="lm_dictionary"), tables["tfns"]),
            with_table(write_run(root, "fpb", "none", "a", 0, GOLD, PRED_A, strategy="full"), tables["fpb"])]
    out = root / "results"
    aggregate_runs([d / "metrics.json" for d in dirs], [d / "predictions.parquet" for d in dirs],
                   out / "runs.csv", out / "summary.csv", out / "comparisons.csv", tables=tables,
                   comparisons=[["a", "b"]], bootstrap_samples=200)
    return out


def report_of(out: Path, summary: Path | None = None) -> str:
    build_report(out / "runs.csv", summary or out / "summary.csv", out / "comparisons.csv",
                 REPO / "data" / "reference" / "published.yaml", out / "report.md", out / "report.html")
    return (out / "report.md").read_text()


def test_metrics_without_the_near_duplicates_of_train(aggregated):
    runs = pl.read_csv(aggregated / "runs.csv", infer_schema_length=None)
    a = runs.filter((pl.col("dataset") == "tfns") & (pl.col("method") == "a")).row(0, named=True)
    assert a["accuracy"] == pytest.approx(0.6) and a["accuracy_no_near_dup"] == pytest.approx(0.5)
    assert a["near_dup_rows_dropped"] == 2
    assert a["macro_f1_no_near_dup"] == pytest.approx(f1_score(GOLD[2:], PRED_A[2:], average="macro"))
    assert a["macro_f1_no_near_dup"] != pytest.approx(a["macro_f1"])
    b = runs.filter((pl.col("dataset") == "tfns") & (pl.col("method") == "b") & (pl.col("seed") == 0)
                    ).row(0, named=True)
    assert b["accuracy"] == pytest.approx(0.6) and b["accuracy_no_near_dup"] == pytest.approx(0.75)
    # a split we make flags nothing: no metric without near-duplicates, nothing dropped
    fpb = runs.filter(pl.col("dataset") == "fpb").row(0, named=True)
    assert fpb["accuracy_no_near_dup"] is None and fpb["near_dup_rows_dropped"] is None

    summary = pl.read_csv(aggregated / "summary.csv", infer_schema_length=None)
    accuracy = summary.filter((pl.col("dataset") == "tfns") & (pl.col("metric") == "accuracy"))
    two_seeds = accuracy.filter(pl.col("method") == "b").row(0, named=True)
    assert two_seeds["mean"] == pytest.approx(0.6) and two_seeds["mean_no_near_dup"] == pytest.approx(0.625)
    assert two_seeds["sd_no_near_dup"] == pytest.approx(pl.Series([0.75, 0.5]).std())
    assert two_seeds["ci_low_no_near_dup"] <= 0.625 <= two_seeds["ci_high_no_near_dup"]
    assert set(accuracy["near_dup_rows_dropped"]) == {2}
    assert summary.filter(pl.col("dataset") == "fpb")["mean_no_near_dup"].null_count() == \
        summary.filter(pl.col("dataset") == "fpb").height

    # the paired comparison too: a − b is 0 on all rows, 0.5 − 0.625 without the two near-duplicates
    comparisons = pl.read_csv(aggregated / "comparisons.csv", infer_schema_length=None)
    gap = comparisons.filter((pl.col("dataset") == "tfns") & (pl.col("metric") == "accuracy")).row(0, named=True)
    assert gap["difference"] == pytest.approx(0.0) and gap["difference_no_near_dup"] == pytest.approx(-0.125)
    assert gap["ci_low_no_near_dup"] <= -0.125 <= gap["ci_high_no_near_dup"] and gap["near_dup_rows_dropped"] == 2
    assert comparisons.filter(pl.col("dataset") == "fpb")["difference_no_near_dup"].null_count() == \
        comparisons.filter(pl.col("dataset") == "fpb").height


def test_the_report_shows_the_near_duplicates_where_the_table_flags_them(aggregated):
    md = report_of(aggregated)
    tfns, fpb = md.split("## tfns")[1].split("\n## ")[0], md.split("## fpb")[1].split("\n## ")[0]
    data = tfns.split("### Data")[1].split("\n### ")[0]
    assert "45 rows (train 30, dev 5, test 10), split as the source gives them" in data
    assert "4 rows share their text with another row up to case" in data
    assert "2 of the 10 test rows are near-duplicates of a train or dev text, 1 of them with another label" in data
    assert "- tfns-0000: “Stock \\*up\\* https://t.co/a” — “stock up https://t.co/b”" in data
    assert "“Shares \\| fall”" in data
    assert "40 rows (train 25, dev 5, test 10), split made by this study" in fpb
    assert "No test row repeats a train or dev text." in fpb
    section = tfns.split("### Near-duplicates of train in test")[1].split("\n### ")[0]
    assert "| method | model | test rows | near-duplicates dropped | macro-F1: all test rows | macro-F1: without " \
           "near-duplicates | accuracy: all test rows | accuracy: without near-duplicates |" in section
    line = next(row for row in section.splitlines() if row.startswith("| a | none |"))
    assert line.startswith("| a | none | 10 | 2 |") and "| 0.600 [" in line and "| 0.500 [" in line
    assert "| 0.625 ± 0.177 [" in next(row for row in section.splitlines() if row.startswith("| b | none |"))
    assert "Near-duplicates" not in fpb   # nothing flagged there
    # the headline gives its methods without them too, for tfns alone
    headline = md.split("## Headline")[1].split("\n## ")[0]
    assert headline.count("Without the test rows that are near-duplicates of a train or dev text, macro-F1: ") == 1
    winner = headline.split("### Winner on tfns")[1]
    assert "(2 rows dropped)" in winner and "; the paired gap, winner − other, " in winner
    assert "| a − b without near-duplicates of train [CI] |" in tfns and "(2 rows dropped) |" in tfns
    assert "without near-duplicates of train [CI]" not in fpb


def test_no_near_duplicate_section_without_the_columns(aggregated, tmp_path):
    """A summary made before the columns existed (the kept study's): no section, no error."""
    old = tmp_path / "summary.csv"
    summary = pl.read_csv(aggregated / "summary.csv", infer_schema_length=None)
    summary.select([c for c in summary.columns if "near_dup" not in c]).write_csv(old)
    assert "Near-duplicates of train in test" not in report_of(aggregated, old)
