"""Do short learning-rate trials choose what full-budget trials choose? A dev-only check of `trial_fraction`.

    python -m bench.trial_agreement BEFORE_RUNS_CSV AFTER_RUNS_CSV

Each runs.csv carries, per (dataset, model, method), the learning rate chosen on dev and the dev metric of every
trial (`chosen_on_dev`, `dev_by_value`; older files only the choice). Given the runs of two studies that differ
in trial length (e.g. `git show 09f4f6c:docs/results/runs.csv`, whose trials ran the whole budget, against the
current docs/results/runs.csv at trial_fraction 0.25), prints one row per tuned method: both choices, whether
they agree, both selection times. Nothing here reads a test metric.
"""

from __future__ import annotations

import sys

import polars as pl


def choices(path: str) -> pl.DataFrame:
    runs = pl.read_csv(path, infer_schema_length=None)
    tuned = runs.filter(pl.col("chosen_on_dev").str.starts_with("learning_rate=")
                        & ~pl.col("method").str.ends_with("-gen"))
    return tuned.unique(["dataset", "model", "method"], keep="first").select(
        "dataset", "model", "method", pl.col("chosen_on_dev").str.strip_prefix("learning_rate=").alias("chosen"),
        # a rate borrowed from another method's selection (learning_rate_from; older files lack the column)
        (pl.col("learning_rate_from") if "learning_rate_from" in runs.columns else pl.lit(None, pl.String))
        .alias("borrowed_from"),
        pl.col("selection_time_s").cast(pl.Float64))


def compare(before: str, after: str) -> pl.DataFrame:
    joined = choices(before).join(choices(after), on=["dataset", "model", "method"], suffix="_after").drop("borrowed_from")
    return joined.with_columns(agree=pl.col("chosen") == pl.col("chosen_after")).sort("dataset", "method")


def main(argv=None) -> int:
    before, after = (argv or sys.argv[1:])[:2]
    table = compare(before, after)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
        print(table)
    print(f"{table['agree'].sum()} of {table.height} choices agree; selection time "
          f"{table['selection_time_s'].sum():.0f} s before, {table['selection_time_s_after'].sum():.0f} s after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
