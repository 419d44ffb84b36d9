"""Every selection in runs.csv and the report records the seeds it averaged and its successive-halving rounds, and
a choice on a grid edge is reported as such only when the grid's growth bound was hit (#29). The traces come
from tunebench.selection itself, as the runs record them."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from test_report import LABELS, REPO, noisy_labels, write_run
from tunebench import selection
from tunebench.evaluation.aggregate import aggregate_runs
from tunebench.evaluation.report import build_report


def quiet(search: selection.Search, score) -> dict:
    return selection.search_grid(search, score, log=lambda _: None)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("dev_choices")
    rng = np.random.default_rng(3)
    gold = [LABELS[i] for i in rng.integers(0, 3, 120)]
    peaked = lambda value, seed, fraction: -abs(math.log10(value) + 3) + 0.01 * seed   # noqa: E731 — best at 1e-3
    # learning rate: two selection seeds, two halving rounds, the choice inside the grid
    rate = quiet(selection.Search(grid=[1e-5, 1e-4, 1e-3, 1e-2], seeds=[0, 1], halving=True, max_extensions=0),
                 peaked)
    rate["dev_metric"] = "macro_f1"
    # a penalty that improves without end: the grid grows once, as far as its bound allows, and stays on an edge
    alpha = {**quiet(selection.Search(grid=[0.1, 1.0], max_extensions=1), lambda v, s, f: v), "key": "alpha"}
    # a penalty on a plateau: the edge choice only ties its neighbour, so the grid does not grow and it is no edge
    flat = {**quiet(selection.Search(grid=[1e-3, 1e-2], max_extensions=3), lambda v, s, f: 0.5), "key": "C"}
    assert alpha["on_edge"] and flat["plateau"] and not flat["on_edge"] and not rate["on_edge"]
    dirs = [write_run(root, "fpb", "tiny", "full", seed, gold, noisy_labels(rng, gold, 0.8), strategy="full",
                      cost={"selection": rate}) for seed in (0, 1)]
    dirs += [write_run(root, "fpb", "none", "lm_dictionary", 0, gold, noisy_labels(rng, gold, 0.6),
                       strategy="lm_dictionary", cost={"grid_search": alpha, "selected": {"alpha": alpha["chosen"]}}),
             write_run(root, "fpb", "tiny", "head", 0, gold, noisy_labels(rng, gold, 0.7), strategy="head",
                       cost={"grid_search": flat, "selected": {"C": flat["chosen"]}})]
    out = root / "results"
    aggregate_runs([d / "metrics.json" for d in dirs], [d / "predictions.parquet" for d in dirs],
                   out / "runs.csv", out / "summary.csv", out / "comparisons.csv", bootstrap_samples=100)
    build_report(out / "runs.csv", out / "summary.csv", out / "comparisons.csv",
                 REPO / "data" / "reference" / "published.yaml", out / "report.md", out / "report.html")
    runs = pl.read_csv(out / "runs.csv", infer_schema_length=None)
    return {r["method"]: r for r in runs.filter(pl.col("seed") == 0).iter_rows(named=True)}, \
        (out / "report.md").read_text()


def test_runs_record_the_seeds_averaged_the_halving_rounds_and_the_growth(built):
    runs, _ = built
    full, dictionary, head = runs["full"], runs["lm_dictionary"], runs["head"]
    assert full["chosen_on_dev"] == "learning_rate=0.001" and full["selection_seeds"] == "0 1"
    assert full["halving_rounds"] == 2 and full["grid_extensions"] == 0 and full["grid_bound_hit"] is False
    assert full["declared_grid"] == "1e-05 0.0001 0.001 0.01" and full["dev_by_value"]   # the trace's own values
    assert dictionary["chosen_on_dev"] == "alpha=10" and dictionary["grid"] == "0.1 1 10"
    assert dictionary["declared_grid"] == "0.1 1" and dictionary["grid_extensions"] == 1
    assert dictionary["grid_bound_hit"] is True and dictionary["selection_seeds"] == "0"
    assert dictionary["halving_rounds"] == 0
    # on an edge: only where the bound was hit; a plateau's edge choice is not one
    assert dictionary["on_edge"] is True and full["on_edge"] is False and head["on_edge"] is False


def test_the_report_marks_an_edge_only_where_the_bound_was_hit(built):
    _, md = built
    methods = md.split("### Methods")[1].split("\n### ")[0]
    notes = {line.split(" | ")[1]: line for line in methods.splitlines() if line.startswith("| ")}
    assert "edge (growth bound hit)" in notes["lm_dictionary"]
    assert "edge" not in notes["head"] and "edge" not in notes["full"]
    chosen = md.split("## How settings were chosen")[1].split("\n## ")[0]
    assert "| seeds averaged | successive-halving rounds |" in chosen
    rows = {line.split(" | ")[1]: line for line in chosen.splitlines() if line.startswith("| fpb |")}
    assert "| learning_rate=0.001 | 1e-05 0.0001 0.001 0.01 |  | 0 1 | 2 |" in rows["full (tiny)"]
    assert "| alpha=10 | 0.1 1 10 (grown from 0.1 1) | edge (growth bound hit) | 0 | 0 |" in rows["lm_dictionary"]
    assert "| C=0.001 | 0.001 0.01 |  | 0 | 0 |" in rows["head (tiny)"]
    assert "| 0 | 0 | 0.1: 0.100, 1: 1.000, 10: 10.000 |" in rows["lm_dictionary"]   # no metric name recorded
