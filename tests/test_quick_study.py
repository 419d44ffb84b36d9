"""The quick study (make run, kept in docs/results/quick/) must not contradict the full one (make study, kept in
docs/results/): on every paired comparison whose 95% interval excludes 0 in the full study, the quick study's
point estimate has the same sign. Comparisons the quick study does not run (a method it leaves out on that
dataset) are not compared; the test fails if none is left to compare."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
FULL, QUICK = REPO / "docs/results", REPO / "docs/results/quick"
KEY = ["dataset", "a", "model_a", "b", "model_b", "metric"]


def significant(comparisons: pl.DataFrame) -> pl.DataFrame:
    """The comparisons whose interval excludes 0."""
    return comparisons.filter((pl.col("ci_low") > 0) | (pl.col("ci_high") < 0))


def contradictions(full: pl.DataFrame, quick: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The full study's significant comparisons the quick one points the other way on, and how many were
    compared."""
    both = significant(full).join(quick.select(*KEY, pl.col("difference").alias("quick")), on=KEY, how="inner")
    return both.filter(pl.col("difference").sign() != pl.col("quick").sign()), both.height


def test_contradictions_are_found():
    """Self-check on crafted tables: a sign flip on a significant comparison is found, one on a comparison
    whose interval spans 0 is not."""
    row = dict(dataset="d", a="x", model_a="m", b="y", model_b="m", metric="macro_f1")
    full = pl.DataFrame([{**row, "difference": 0.1, "ci_low": 0.05, "ci_high": 0.15},
                         {**row, "b": "z", "difference": 0.1, "ci_low": -0.05, "ci_high": 0.25}])
    quick = pl.DataFrame([{**row, "difference": -0.02}, {**row, "b": "z", "difference": -0.3}])
    found, compared = contradictions(full, quick)
    assert compared == 1 and found.select("b").to_series().to_list() == ["y"]


def kept_protocol(folder: Path) -> str | None:
    from tunebench.evaluation import readme

    return readme.protocol_of(readme.study_commit(readme.read_kept(folder)))


@pytest.mark.skipif(not (QUICK / "comparisons.csv").exists(), reason="no quick study kept in docs/results/quick")
def test_the_quick_study_agrees_in_sign_with_the_full_one():
    if kept_protocol(FULL) == "previous":
        pytest.skip("the kept full study predates the current protocol: the quick one is not its size-down")
    assert kept_protocol(QUICK) != "previous", "the kept quick study predates the current protocol"
    full, quick = pl.read_csv(FULL / "comparisons.csv"), pl.read_csv(QUICK / "comparisons.csv")
    found, compared = contradictions(full, quick)
    assert compared > 0, "no significant comparison of the full study is in the quick one"
    assert found.is_empty(), (f"the quick study points the other way on {found.height} of {compared} "
                              f"comparisons the full study finds significant:\n{found.select(*KEY, 'difference', 'quick')}")
