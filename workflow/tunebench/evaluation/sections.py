"""The report's sections: functions from the aggregated tables to blocks, which report.to_markdown renders.

A block is ("h1" | "h2" | "h3", text), ("p", text), ("list", items), ("table", header, rows) or
("figure", name, caption), name a PNG under figures/. A dataset's sections take its `Scope`, the dataset's
slice of the tables. A `<method>-gen` row (the freely generated answers of a `decoding: both` run) is folded
into its method's row as a column wherever methods are listed: it is the same run, not another method.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tunebench import families
from tunebench.evaluation import plots
from tunebench.evaluation.metrics import primary_direction
from tunebench.families import NO_MODEL

METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "mcc": "MCC",
                "mse": "MSE", "rmse": "RMSE", "mae": "MAE", "r2": "R²", "pearson": "Pearson r",
                "cosine": "cosine", "unparseable_rate": "unparseable rate"}
# The second number of a relative-gain headline ("+27% R², −46% MSE"), beside the primary metric.
SECOND_METRIC = {"classification": "accuracy", "regression": "mse"}
FAMILY_NAMES = {"baseline": "baseline", "encoder": "encoder", "embedding": "frozen embeddings",
                "icl": "prompting", "generative": "generative fine-tuning"}
# Metrics that divide by the spread of the predictions: a constant prediction (the majority class, the
# training mean, a collapsed run) leaves them undefined, and the metric functions then return exactly 0.
NEEDS_SPREAD = {"mcc", "pearson"}
GENERATED = "-gen"


# ---- cells ---------------------------------------------------------------------------------------------------

def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{round(x, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.000"


def fmt_ci(low, high, digits: int = 3) -> str:
    return "" if low is None or np.isnan(low) else f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_pct(x) -> str:
    if x is None or np.isnan(x):
        return "–"
    return f"{'+' if x >= 0 else '−'}{abs(x):.1f}%"


def fmt_int(x) -> str:
    return "–" if x is None or np.isnan(x) else f"{x:,.0f}"


def fmt_p(p) -> str:
    if p is None or np.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_count(x) -> str:
    """1234567 → '1.2M': parameter counts in a headline cell."""
    if x is None or np.isnan(x):
        return "–"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= size:
            return f"{x / size:.1f}{suffix}"
    return f"{x:.0f}"


def label(method: str, model: str) -> str:
    return method if model == NO_MODEL else f"{method} ({model})"


def undefined(s: dict) -> bool:
    """A metric the predictions left undefined: every resample at exactly 0, the metric functions' value for
    a constant prediction (a real correlation is never exactly 0 on every resample)."""
    return s.get("metric") in NEEDS_SPREAD and s["mean"] == 0 and s.get("ci_low") == 0 and s.get("ci_high") == 0


def value_cell(s: dict) -> str:
    """'0.770 ± 0.013 [0.725, 0.813]': mean, sd over seeds (several seeds) and interval of a summary row."""
    if undefined(s):
        return "n/a (constant prediction)"
    value = fmt(s["mean"]) + (f" ± {fmt(s['sd'])}" if s["n_seeds"] > 1 and s["sd"] is not None else "")
    return f"{value} {fmt_ci(s['ci_low'], s['ci_high'])}".strip()


def table(header: list[str], rows: list[list[str]]):
    """A table block without the columns that are empty in every row (nothing to read there)."""
    keep = [j for j in range(len(header)) if any(str(row[j]) not in ("", "–") for row in rows)] if rows \
        else list(range(len(header)))
    return ("table", [header[j] for j in keep], [[row[j] for j in keep] for row in rows])


def _any_true(runs: pl.DataFrame, column: str) -> bool:
    return column in runs.columns and bool((runs[column].cast(pl.String).str.to_lowercase() == "true").any())


def group_notes(runs: pl.DataFrame) -> str:
    """The warnings a method's runs carry: ⚠ collapsed (some seed answered one class for ≥ 90% of the test rows
    while gold has < 70% of it: its metrics measure a bias, not the method), ⚠ did not learn, edge."""
    notes = []
    if _any_true(runs, "collapsed"):
        notes.append("⚠ collapsed")
    if "learned" in runs.columns and (runs["learned"].cast(pl.String).str.to_lowercase() == "false").any():
        notes.append("⚠ did not learn")
    if _any_true(runs, "on_edge"):
        notes.append("edge (growth bound hit)" if _any_true(runs, "grid_bound_hit") else "edge")
    return ", ".join(notes)


def mean_of(runs: pl.DataFrame, column: str, default=None):
    """The column's mean over the runs (seeds), `default` where the runs recorded none."""
    if column not in runs.columns:
        return default
    value = runs[column].cast(pl.Float64, strict=False).mean()
    return default if value is None else value


# ---- one dataset's tables --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """One dataset's slice of the tables, and the folder its figures go to."""
    name: str
    task: str
    primary: str
    runs: pl.DataFrame
    summary: pl.DataFrame          # without the folded `-gen` rows
    generated: pl.DataFrame        # the folded `-gen` rows, `method` their method's name
    comparisons: pl.DataFrame
    strata: pl.DataFrame | None
    figures: Path

    @property
    def direction(self) -> int:
        return primary_direction(self.primary)

    @property
    def ranked(self) -> pl.DataFrame:
        """The primary metric's summary row of every method, best first."""
        return self.summary.filter(pl.col("metric") == self.primary).sort("mean", descending=self.direction > 0)

    @property
    def metrics(self) -> list[str]:
        return self.summary["metric"].unique(maintain_order=True).to_list()


def scope(name: str, primary_metric, runs, summary, comparisons, strata, figures: Path) -> Scope:
    mine = summary.filter(pl.col("dataset") == name)
    task = mine["task"][0]
    primary = primary_metric.get(task) if isinstance(primary_metric, dict) else primary_metric
    if primary not in mine["metric"].to_list():
        primary = mine["metric"][0]
    generated = folded(mine)
    return Scope(name, task, primary, runs.filter(pl.col("dataset") == name), mine.filter(~generated),
                 mine.filter(generated).with_columns(pl.col("method").str.strip_suffix(GENERATED)),
                 comparisons.filter(pl.col("dataset") == name),
                 None if strata is None else strata.filter(pl.col("dataset") == name), figures)


def group_runs(s: Scope, model: str, method: str) -> pl.DataFrame:
    return s.runs.filter((pl.col("model") == model) & (pl.col("method") == method))


def stat(s: Scope, model: str, method: str, metric: str, generated: bool = False) -> dict | None:
    """The summary row of a method's metric (of its generated answers with `generated`), None if absent."""
    rows = (s.generated if generated else s.summary).filter(
        (pl.col("model") == model) & (pl.col("method") == method) & (pl.col("metric") == metric))
    return rows.row(0, named=True) if rows.height else None


def stat_cell(s: Scope, model: str, method: str, metric: str, generated: bool = False) -> str:
    row = stat(s, model, method, metric, generated)
    return "–" if row is None else value_cell(row)


def has_generated(s: Scope) -> bool:
    return not s.generated.is_empty()


def test_rows(s: Scope, model: str, method: str) -> str:
    runs = group_runs(s, model, method)
    return fmt_int(runs["n_test"].max()) if "n_test" in runs.columns and runs.height else "–"


def notes(s: Scope, model: str, method: str) -> str:
    """The method's warnings, and its generated answers' where they differ."""
    own = group_notes(group_runs(s, model, method))
    generated = group_notes(group_runs(s, model, method + GENERATED)) if has_generated(s) else ""
    if generated and generated != own:
        return ", ".join(filter(None, [own, f"generated answers: {generated}"]))
    return own


def family_of(s: Scope, model: str, method: str) -> str:
    runs = group_runs(s, model, method)
    return runs["family"][0] if runs.height and "family" in runs.columns else "unknown"


def full_test_rows(s: Scope):
    return s.runs["n_test"].max() if "n_test" in s.runs.columns else None


def group_cost(s: Scope, model: str, method: str) -> dict:
    """Seconds of training (mean over seeds), of the dev selection (once per method) and of inference on the
    whole test set (a run on the test subset scaled up to all rows, so that every method pays for the same
    rows), their total, and the parameters."""
    runs = group_runs(s, model, method)
    train = mean_of(runs, "train_time_s", 0.0)        # none recorded: nothing trained (prompting)
    selection = mean_of(runs, "selection_time_s", 0.0)  # the same value on every seed of the method
    per_row = None
    if {"eval_time_s", "n_test"} <= set(runs.columns):
        per_row = (runs["eval_time_s"].cast(pl.Float64, strict=False) / runs["n_test"]).mean()
    full = full_test_rows(s)
    inference = None if per_row is None or full is None else per_row * full
    return {"train": train, "selection": selection, "inference": inference,
            "per_1000": None if per_row is None else 1000 * per_row,
            "total": None if inference is None else train + selection + inference,
            "trainable": mean_of(runs, "trainable_params"), "params": mean_of(runs, "total_params")}


def cost_cell(cost: dict) -> str:
    """'235.0 s, 74.9k of 22.8M params trained'."""
    seconds = "–" if cost["total"] is None else f"{cost['total']:,.1f} s"
    trained, used = cost["trainable"], cost["params"]
    if trained is None:
        return seconds
    if used is None or used == trained:
        return f"{seconds}, {fmt_count(trained)} params trained"
    return f"{seconds}, {fmt_count(trained)} of {fmt_count(used)} params trained"


def save_figure(s: Scope, fig, kind: str, caption: str, method: str = "all"):
    """figures/<dataset>/<method>/<kind>.png (method "all" for the comparisons), so that `snakemake --report`
    can toggle the figures by dataset and by method."""
    name = f"{s.name}/{method}/{kind}.png"
    plots.save(fig, s.figures / name)
    return ("figure", name, f"{s.name}: {caption}")


# ---- the headline -------------------------------------------------------------------------------------------

HEADLINE_TEXT = (
    "Per dataset: the method with the best primary metric, the best method of any other family (baseline, "
    "encoder, frozen embeddings, prompting, generative fine-tuning), the paired gap between the two on the test "
    "rows both scored (from comparisons.csv; an interval that excludes 0 is a gap the test set resolves), and "
    "what each cost: seconds of training, of the dev selection of its settings and of inference on the whole "
    "test set, and the parameters it trained of those it used. The sections per dataset below have every "
    "method.")


def headline(scopes: list[Scope]) -> list:
    header = ["dataset", "ranked by", "winner", "winner's value", "best of another family", "its value",
              "gap, winner − other [CI]", "winner's cost", "other's cost"]
    rows, details = [], []
    for s in scopes:
        winner, other = headline_methods(s)
        rows.append(headline_row(s, winner, other))
        details += headline_detail(s, winner, other)
    return [("h2", "Headline: who wins each dataset, by how much, at what cost"), ("p", HEADLINE_TEXT),
            table(header, rows), *details]


def headline_methods(s: Scope) -> tuple[dict, dict | None]:
    """The best method, and the best one of another family (None: one family only)."""
    ranked = list(s.ranked.iter_rows(named=True))
    family = family_of(s, ranked[0]["model"], ranked[0]["method"])
    other = next((r for r in ranked if family_of(s, r["model"], r["method"]) != family), None)
    return ranked[0], other


def with_family(s: Scope, r: dict) -> str:
    return f"{label(r['method'], r['model'])}, {FAMILY_NAMES.get(family_of(s, r['model'], r['method']), '?')}"


def headline_row(s: Scope, winner: dict, other: dict | None) -> list[str]:
    cells = [s.name, metric_name(s.primary), with_family(s, winner), value_cell(winner)]
    if other is None:
        return cells + ["– (one family only)", "", "", cost_cell(group_cost(s, winner["model"], winner["method"])), ""]
    gap = paired_gap(s, winner, other)
    gap_text = (f"{fmt(gap['difference'])} {fmt_ci(gap['ci_low'], gap['ci_high'])} ({gap['n_test']} rows)"
                if gap else f"{fmt(winner['mean'] - other['mean'])} (unpaired: the pair is not compared)")
    return cells + [with_family(s, other), value_cell(other), gap_text,
                    cost_cell(group_cost(s, winner["model"], winner["method"])),
                    cost_cell(group_cost(s, other["model"], other["method"]))]


def paired_gap(s: Scope, a: dict, b: dict) -> dict | None:
    """a − b on the primary metric from comparisons.csv, whichever way round the pair was configured."""
    rows = s.comparisons.filter(pl.col("metric") == s.primary)
    for (x, y), sign in (((a, b), 1), ((b, a), -1)):
        found = rows.filter((pl.col("a") == x["method"]) & (pl.col("model_a") == x["model"])
                            & (pl.col("b") == y["method"]) & (pl.col("model_b") == y["model"]))
        if found.height:
            r = found.row(0, named=True)
            low, high = signed_ci(r["ci_low"], r["ci_high"], sign)
            near_low, near_high = signed_ci(r.get("ci_low_no_near_dup"), r.get("ci_high_no_near_dup"), sign)
            near = r.get("difference_no_near_dup")
            return {"difference": sign * r["difference"], "ci_low": low, "ci_high": high, "n_test": r["n_test"],
                    "mcnemar_p": r["mcnemar_p"], "difference_no_near_dup": None if near is None else sign * near,
                    "ci_low_no_near_dup": near_low, "ci_high_no_near_dup": near_high}
    return None


def signed_ci(low, high, sign: int) -> tuple:
    """An interval of a − b as one of b − a (sign −1); (None, None) where there is none."""
    if low is None or np.isnan(low):
        return None, None
    return tuple(sorted((sign * low, sign * high)))


def gap_sentence(s: Scope, winner: dict, other: dict) -> str:
    a, b = label(winner["method"], winner["model"]), label(other["method"], other["model"])
    gap = paired_gap(s, winner, other)
    if gap is None:
        return (f"{a} leads {b}, the best of another family, by {fmt(winner['mean'] - other['mean'])} "
                f"{metric_name(s.primary)} (a difference of means: the pair is not among the configured "
                f"comparisons, config key report.comparisons, so there is no paired interval).")
    text = (f"{a} − {b}, the best of another family: {fmt(gap['difference'])} {metric_name(s.primary)} "
            f"{fmt_ci(gap['ci_low'], gap['ci_high'])} on the {gap['n_test']} test rows both scored")
    text += "" if gap["mcnemar_p"] is None or np.isnan(gap["mcnemar_p"]) else f", McNemar p {fmt_p(gap['mcnemar_p'])}"
    if gap["ci_low"] is None:
        return text + "."
    resolved = gap["ci_low"] > 0 or gap["ci_high"] < 0
    return text + (". The interval excludes 0." if resolved else
                   ". The interval includes 0: this test set does not separate the two.")


def headline_detail(s: Scope, winner: dict, other: dict | None) -> list:
    chosen = [r for r in (winner, other) if r is not None]
    blocks = [("h3", f"Winner on {s.name}: {label(winner['method'], winner['model'])}")]
    if other is not None:
        blocks.append(("p", gap_sentence(s, winner, other)))
    blocks += near_dup_sentence(s, chosen)
    header = ["role", "method", "family", "train (s)", "dev selection (s)", "inference, whole test set (s)",
              "total (s)", "trainable params", "params used", "notes"]
    rows = []
    for role, r in zip(("winner", "best of another family"), chosen):
        c = group_cost(s, r["model"], r["method"])
        rows.append([role, label(r["method"], r["model"]), FAMILY_NAMES.get(family_of(s, r["model"], r["method"]), "?"),
                     fmt(c["train"], 1), fmt(c["selection"], 1), fmt(c["inference"], 1), fmt(c["total"], 1),
                     fmt_int(c["trainable"]), fmt_int(c["params"]), notes(s, r["model"], r["method"])])
    blocks.append(table(header, rows))
    blocks += per_class_blocks(s, chosen, "Per-class F1 of these two")
    blocks += cost_plot(s)
    blocks += [b for r in chosen for b in confusion_block(s, r)]
    return blocks


def cost_plot(s: Scope) -> list:
    """The primary metric against the total cost of every method, inference included, so that prompting (no
    training, all inference) stands beside the methods that train."""
    points, missing = [], []
    for r in s.ranked.iter_rows(named=True):
        cost, family = group_cost(s, r["model"], r["method"]), family_of(s, r["model"], r["method"])
        if cost["total"] is None:
            missing.append(label(r["method"], r["model"]))
            continue
        points.append({"x": max(cost["total"], 0.01), "y": r["mean"], "label": label(r["method"], r["model"]),
                       "group": FAMILY_NAMES.get(family, family)})
    if not points:
        return []
    fig = plots.against_cost(points, "total cost, s: training + dev selection + inference (log axis)",
                             metric_name(s.primary), s.direction)
    drawn = sorted({p["group"] for p in points})
    subset = s.runs["n_test"].min() < full_test_rows(s) if "n_test" in s.runs.columns else False
    caption = (f"{metric_name(s.primary)} against total cost in seconds — training, dev selection and inference "
               f"on all {fmt_int(full_test_rows(s))} test rows{' (test-subset runs scaled up)' if subset else ''} "
               f"— every method of every family ({', '.join(drawn)}); the grey line joins the Pareto front.")
    if missing:
        caption += f" Not drawn, no inference time recorded: {', '.join(missing)}."
    return [save_figure(s, fig, "vs-cost", caption)]


def confusion_block(s: Scope, r: dict) -> list:
    if s.task != "classification":
        return []
    found = confusion_of(group_runs(s, r["model"], r["method"]))
    name = label(r["method"], r["model"])
    if found is None:
        return [("p", f"{name}: no confusion matrix recorded (metrics.json of its runs).")]
    labels, matrix = found
    fig = plots.confusion(labels, matrix, name)
    seeds = group_runs(s, r["model"], r["method"]).height
    which = "its test rows" if seeds == 1 else f"the test rows of its {seeds} seeds summed"
    caption = (f"confusion matrix of {name}, {which} (rows gold, columns predicted; the share is of the gold "
               f"row; unparsed answers are in no column).")
    return [save_figure(s, fig, "confusion", caption, method=r["method"])]


def confusion_of(runs: pl.DataFrame) -> tuple[list[str], np.ndarray] | None:
    """The confusion matrix each run's metrics.json holds, summed over the runs (None: one is missing)."""
    labels, total = None, None
    for run_dir in runs["run_dir"].to_list() if "run_dir" in runs.columns else []:
        path = Path(run_dir) / "metrics.json"
        cm = json.loads(path.read_text())["metrics"].get("confusion_matrix") if path.exists() else None
        if not cm or (labels is not None and cm["labels"] != labels):
            return None
        labels, matrix = cm["labels"], np.array(cm["matrix"])
        total = matrix if total is None else total + matrix
    return None if total is None else (labels, total)


# ---- a dataset's sections -----------------------------------------------------------------------------------

def dataset_sections(s: Scope, anchors: list[dict], n_words: int) -> list:
    blocks = [("h2", f"{s.name} ({s.task}; ranked by {metric_name(s.primary)})")]
    for section in (methods_section, data_section, near_duplicates_section, lambda s: anchors_section(s, anchors),
                    per_class_section, prompting_section,
                    comparisons_section, parse_rules_section, strata_section, cost_section, figures_section,
                    selection_section, lambda s: dictionary_section(s, n_words)):
        blocks += section(s)
    return blocks


METHODS_LEGEND = (
    "⚠ collapsed: some seed's run answered one class for at least 90% of the test rows although gold has less "
    "than 70% of that class — its score measures a bias of the prompt or the model, not its strategy. ⚠ did not "
    "learn: some seed's run did not beat the trivial baseline (majority class or training mean) on dev, or its "
    "training loss stayed flat — not a fair attempt of its strategy. edge: the setting chosen on dev sits on an "
    "edge of the values tried (a wider grid might do better; \"growth bound hit\": the grid grew past its edge as "
    "often as allowed). n/a (constant prediction): MCC and Pearson r divide by the spread of the predictions, "
    "and a method that predicts one value for every row has none, so the metric is undefined. Generated "
    "answers: the same run's freely generated answers, parsed (`decoding: both`; `<method>-gen` in the CSV "
    "files). Test rows below the others' mark methods scored on the dataset's fixed test subset; compare them "
    "with the others in the paired comparisons, which use the shared rows.")


def methods_section(s: Scope) -> list:
    metrics = [s.primary] + [m for m in s.metrics if m != s.primary and not m.startswith(("as_neutral_", "dropped_"))]
    generated = [s.primary, "unparseable_rate"] if has_generated(s) else []
    header = ["#", "method", "model", "seeds", "test rows", *map(metric_name, metrics),
              *(f"generated answers: {metric_name(m)}" for m in generated), "notes"]
    rows = []
    for rank, r in enumerate(s.ranked.iter_rows(named=True), 1):
        model, method = r["model"], r["method"]
        rows.append([str(rank), method, model, str(r["n_seeds"]), test_rows(s, model, method),
                     *(stat_cell(s, model, method, m) for m in metrics),
                     *(stat_cell(s, model, method, m, generated=True) for m in generated), notes(s, model, method)])
    return [("h3", "Methods"), table(header, rows), ("p", METHODS_LEGEND)]


NEAR_DUP_TEXT = (
    "This dataset's test split is fixed by its source, and some of its test rows repeat a train or dev text up "
    "to case, Unicode form, mojibake, quotes, punctuation, spacing, URLs and @handles (the near-duplicate key; "
    "column near_duplicate_of_train of the dataset's table.parquet): texts the models may have learned from. The "
    "headline metrics on every test row and on the test rows without them (mean over seeds and interval, as "
    "above; summary.csv's *_no_near_dup columns; their count and a few of them under Data). A method scored on "
    "the fixed test subset drops the flagged rows in it.")


def near_duplicates_section(s: Scope) -> list:
    """Where the dataset's table flags test rows as near-duplicates of train (a test split the source fixes):
    how many and a few of them (from the dataset's manifest), and the headline metrics without them."""
    if "mean_no_near_dup" not in s.summary.columns:
        return []
    flagged = s.summary.filter(pl.col("mean_no_near_dup").is_not_null())
    if flagged.is_empty():
        return []
    metrics = list(dict.fromkeys(m for m in (s.primary, SECOND_METRIC[s.task]) if m in s.metrics))
    header = ["method", "model", "test rows", "near-duplicates dropped"]
    header += [f"{metric_name(m)}{part}" for m in metrics for part in (": all test rows", ": without near-duplicates")]
    rows = []
    for r in s.ranked.iter_rows(named=True):
        model, method = r["model"], r["method"]
        by_metric = {m: stat(s, model, method, m) for m in metrics}
        if any(row is None or row.get("mean_no_near_dup") is None for row in by_metric.values()):
            continue
        dropped = fmt_int(by_metric[metrics[0]]["near_dup_rows_dropped"])
        rows.append([method, model, test_rows(s, model, method), dropped,
                     *(cell for m in metrics for cell in (value_cell(by_metric[m]), without_near_dup(by_metric[m])))])
    return [("h3", "Near-duplicates of train in test"), ("p", NEAR_DUP_TEXT), table(header, rows)]


def near_dup_sentence(s: Scope, chosen: list[dict]) -> list:
    """The headline methods' primary metric without the near-duplicates of train in test, where there are any."""
    if "mean_no_near_dup" not in s.summary.columns:
        return []
    parts = [f"{label(r['method'], r['model'])} {without_near_dup(r)} ({fmt_int(r['near_dup_rows_dropped'])} rows "
             f"dropped)" for r in chosen if r.get("mean_no_near_dup") is not None]
    if not parts:
        return []
    gap = paired_gap(s, *chosen) if len(chosen) == 2 else None
    if gap and gap["difference_no_near_dup"] is not None:
        parts.append(f"the paired gap, winner − other, {fmt(gap['difference_no_near_dup'])} "
                     f"{fmt_ci(gap['ci_low_no_near_dup'], gap['ci_high_no_near_dup'])}".strip())
    return [("p", f"Without the test rows that are near-duplicates of a train or dev text, {metric_name(s.primary)}: "
                  + "; ".join(parts) + " (see “Near-duplicates of train in test” below).")]


def without_near_dup(row: dict) -> str:
    """A summary row's value cell on the test rows without the near-duplicates of train."""
    return value_cell({**row, "mean": row["mean_no_near_dup"], "sd": row["sd_no_near_dup"],
                       "ci_low": row["ci_low_no_near_dup"], "ci_high": row["ci_high_no_near_dup"]})


SPLIT_METHODS = {"random": "made by this study (rows that share a near-duplicate key or a group kept in one split)",
                 "given": "as the source gives them (dev carved from train where it gives none)",
                 "column": "by the source's split column"}


def data_section(s: Scope) -> list:
    """The dataset as prepared (its manifest.json): rows per split, how they were split, near-duplicate texts,
    and the test rows that repeat a train or dev text with a few examples."""
    manifest = data_manifest(s)
    if not manifest:
        return []
    splits = manifest.get("rows_per_split") or {}
    sizes = ", ".join(f"{split} {fmt_int(splits[split])}" for split in ("train", "dev", "test") if split in splits)
    method = manifest.get("split_method")
    text = f"{fmt_int(manifest.get('rows'))} rows ({sizes}), split {SPLIT_METHODS.get(method, f'by {method}')}."
    near = manifest.get("near_duplicate_texts") or {}
    if near.get("rows"):
        text += (f" {fmt_int(near['rows'])} rows share their text with another row up to case, Unicode form, "
                 f"mojibake, quotes, punctuation, spacing, URLs and @handles (groups of such rows: "
                 f"{fmt_int(near['groups'])}).")
    found = manifest.get("test_near_duplicates_of_train") or {}
    if not found.get("rows"):
        return [("h3", "Data"), ("p", text + " No test row repeats a train or dev text.")]
    return [("h3", "Data"), ("p", text), *near_dup_examples(s, found, splits.get("test"))]


def near_dup_examples(s: Scope, found: dict, total, n: int = 5) -> list:
    """The count and a few examples of the test rows that repeat a train or dev text (the manifest's
    test_near_duplicates_of_train)."""
    other = next((v for k, v in found.items() if k.startswith("other_")), None)
    text = f"{fmt_int(found['rows'])} of the {fmt_int(total)} test rows are near-duplicates of a train or dev text"
    if other:
        text += f", {other} of them with another {'label' if s.task == 'classification' else 'target'}"
    items = [f"{e['id']}: “{plain(e['test_text'])}” — “{plain(e['seen_text'])}”"
             for e in found.get("examples", [])[:n]]
    if not items:
        return [("p", text + ".")]
    return [("p", text + ". For example (the test text, then the train or dev text it repeats):"), ("list", items)]


def plain(text: str) -> str:
    """A text shown as it is in Markdown: its characters that Markdown reads as formatting escaped."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", " ".join(str(text).split()))


def data_manifest(s: Scope) -> dict | None:
    """The dataset's manifest.json, found beside the table.parquet its runs read (None if not found)."""
    if "data_table" not in s.runs.columns:
        return None
    for table_path in s.runs["data_table"].drop_nulls().unique(maintain_order=True).to_list():
        path = Path(table_path).parent / "manifest.json"
        if path.exists():
            return json.loads(path.read_text())
    return None


def anchors_section(s: Scope, anchors: list[dict]) -> list:
    if not anchors:
        return []
    splits = split_methods(s.runs)
    if any(a.get("split_method") in splits for a in anchors):
        text = ("“same split as ours” marks a figure whose split this study rebuilt for this dataset "
                "(data/reference/published.yaml names each figure's split method); every other figure was "
                "measured on a split of its own and compares only in order of magnitude.")
    else:
        text = ("None of these figures was measured on a split this study rebuilt for this dataset "
                "(data/reference/published.yaml names each figure's split method): they compare with ours only "
                "in order of magnitude.")
    return [("h3", "Published figures on this dataset"), ("p", text),
            anchor_table(anchors, splits, lambda a: same_family(s, a))]


def anchor_matches(anchor: dict, name: str, runs: pl.DataFrame) -> bool:
    loaders = set(runs["loader"].drop_nulls().to_list()) if "loader" in runs.columns else set()
    names = {part.strip() for part in str(anchor.get("dataset", "")).split(",")}
    return bool(names & ({name} | loaders))


def split_methods(runs: pl.DataFrame) -> set[str]:
    return set(runs["split_method"].drop_nulls().to_list()) if "split_method" in runs.columns else set()


def anchor_table(anchors: list[dict], our_splits: set[str] = frozenset(), ours=None):
    """Published figures, each with "yes" where a dataset of ours rebuilt its split and, where `ours`
    (anchor → text) finds them, our runs of the same family on the same metric."""
    header = ["source", "model / method", "dataset, split", "same split as ours", "metric", "value",
              "our runs of that family", "note"]
    rows = [[a.get("source", ""), f"{a.get('model', '')} / {a.get('method', '')}",
             f"{a.get('dataset_detail', a.get('dataset', ''))}; {a.get('split', '')}",
             "yes" if a.get("split_method") in our_splits else "",
             metric_name(a.get("metric")) if a.get("metric") else "",
             str(a.get("value", "")), ours(a) if ours else "", a.get("note", "")] for a in anchors]
    return table(header, rows)


def same_family(s: Scope, anchor: dict) -> str:
    """Our runs of the anchor's family (its `ours`: strategies, "icl k=0" for a given k) on its metric, every
    matching method with its mean over seeds — none picked by its test score."""
    metric = anchor.get("metric")
    if not anchor.get("ours") or metric not in s.metrics:
        return ""
    wanted = [str(entry).split() for entry in anchor["ours"]]
    full = fmt_int(full_test_rows(s))
    values = []
    for r in s.summary.filter(pl.col("metric") == metric).iter_rows(named=True):
        first = group_runs(s, r["model"], r["method"]).row(0, named=True)
        if not any(first["strategy"] == strategy and (not k or str(first.get("k")) == k[0].removeprefix("k="))
                   for strategy, *k in wanted):
            continue
        rows = test_rows(s, r["model"], r["method"])
        subset = f" ({rows} of {full} test rows)" if rows != full else ""   # the fixed test subset
        gen = stat(s, r["model"], r["method"], metric, generated=True)
        generated = f", generated answers {fmt(gen['mean'])}" if gen else ""
        values.append(f"{label(r['method'], r['model'])} {fmt(r['mean'])}{generated}{subset}")
    return ", ".join(values)


def per_class_section(s: Scope) -> list:
    """F1 of every class per method (mean over seeds), with the share of the most predicted class: where a
    macro-F1 comes from, and which methods answer one class for nearly everything."""
    return per_class_blocks(s, list(s.ranked.iter_rows(named=True)), "Per-class F1", "h3")


def per_class_blocks(s: Scope, rows: list[dict], title: str, level: str = "h4") -> list:
    columns = [c for c in s.runs.columns if c.startswith("f1_")]
    if s.task != "classification" or not columns:
        return []
    header = ["method", "model", *(f"F1 {c.removeprefix('f1_')}" for c in columns),
              "share of the most predicted class", "notes"]
    cells = []
    for r in rows:
        runs = group_runs(s, r["model"], r["method"])
        cells.append([r["method"], r["model"], *(fmt(mean_of(runs, c)) for c in columns),
                      fmt(mean_of(runs, "top_class_share")), notes(s, r["model"], r["method"])])
    return [(level, title), table(header, cells)]


PROMPTING_TEXT = (
    "Fatemi & Hu's question — does fine-tuning beat zero- and few-shot prompting of an instruction-tuned model, "
    "and do more demonstrations help? — on this dataset. Demonstrations come from the training split only (drawn "
    "at random once per seed and shared by every test text, class-balanced, drawn afresh per test text, or the most "
    "similar training texts per test text). Label scoring compares the "
    "label words' log-likelihoods by a scoring rule (sum, per-token mean, per-byte, contextual calibration or "
    "PMI) that each prompting run chose, with its answer words, on a fixed dev sample; the column after it gives "
    "the same runs' test score under the uncalibrated per-token mean, so the reader sees how much of the gap the "
    "scoring rule explains. Generated answers are parsed, an unparseable one counts as wrong (other rules below). "
    "The paired differences with their intervals are in the comparisons that follow, on the shared test rows.")


def registered(r: dict) -> families.Strategy | None:
    """The registry's entry for a run's strategy (None: one this code does not know, e.g. from an older study)."""
    try:
        return families.strategy(r["strategy"])
    except KeyError:
        return None


def approach(r: dict) -> str | None:
    """Which side of "fine-tuning vs prompting" a run is on (None: a baseline), as the registry says."""
    side = getattr(registered(r), "approach", None)
    if side is None:
        return None
    generated = " (generated answers)" if r.get("decoding") == "generate" else ""
    if side == "prompting":
        return ("prompting, zero-shot" if not r.get("k") else f"prompting, {draw_name(r)} demonstrations") + generated
    return side + generated


def prompting_section(s: Scope) -> list:
    methods = set(zip(s.summary["model"].to_list(), s.summary["method"].to_list()))
    groups = [r for r in s.runs.unique(["model", "method"], maintain_order=True).iter_rows(named=True)
              if (r["model"], r["method"]) in methods and approach(r) is not None]
    if not any(approach(r).startswith("prompting") for r in groups):
        return []
    name = metric_name(s.primary)
    header = ["approach", "method", "model", "k", "seeds", "test rows", name, "scoring rule, answer words (dev choice)",
              f"{name} by per-token mean, uncalibrated", f"{name} of generated answers"]
    rows = []
    # Prompting by k, then by how demonstrations were chosen: the rows answer "do more demonstrations help?".
    for r in sorted(groups, key=lambda r: (approach(r).split(",")[0], r.get("k") or 0, approach(r))):
        model, method = r["model"], r["method"]
        own = stat(s, model, method, s.primary)
        if own is not None:
            prompted = approach(r).startswith("prompting")
            rows.append([approach(r), method, model, str(r.get("k") or 0) if prompted else "",
                         str(own["n_seeds"]), test_rows(s, model, method), value_cell(own),
                         *scoring_cells(s, r), stat_cell(s, model, method, s.primary, generated=True)])
    return [("h3", "Fine-tuning vs prompting"), ("p", PROMPTING_TEXT), table(header, rows),
            *best_prompting_by_k(s, groups), *draw_cost_blocks(s)]


DRAW_NAMES = {"random/per_run": "random", "balanced/per_run": "class-balanced", "random/per_query": "per-query random",
              "balanced/per_query": "per-query class-balanced", "similar": "similar"}


def draw_name(r: dict) -> str:
    """How a run's demonstrations were drawn, in words (runs.csv demonstration_draw, else its selection)."""
    draw = r.get("demonstration_draw")
    return DRAW_NAMES.get(draw, draw) if draw else (r.get("selection") or "random")


BEST_BY_K_TEXT = (
    "Per k, the prompting configuration — demonstration draw, scoring rule and answer words — with the best dev "
    "score (the runs' own dev choice, mean over seeds; every draw scores the same fixed dev sample), its test score, "
    "and the same runs' test score under the uncalibrated per-token mean with the same answer words: the difference "
    "is what the scoring rule chosen on dev adds. Nothing here is picked on test.")


def best_prompting_by_k(s: Scope, groups: list[dict]) -> list:
    """Per model and k, the label-scoring prompting method whose runs' dev choice scored best on dev, beside its
    test metric under the per-token mean (runs.csv macro_f1_mean: the uncalibrated rule)."""
    best: dict[tuple, tuple[float, dict]] = {}
    for r in groups:
        scored = r["family"] == "icl" and r.get("decoding") != "generate"
        dev = mean_of(group_runs(s, r["model"], r["method"]), "selection_dev_value") if scored else None
        key = (r["model"], int(r.get("k") or 0))
        if dev is not None and stat(s, r["model"], r["method"], s.primary) and (key not in best or dev > best[key][0]):
            best[key] = (dev, r)
    if not best:
        return []
    name = metric_name(s.primary)
    rows = []
    for (model, k), (dev, r) in sorted(best.items()):
        chosen = stat(s, model, r["method"], s.primary)
        uncalibrated = mean_of(group_runs(s, model, r["method"]), f"{s.primary}_mean")
        how = f"{draw_name(r)} demonstrations; " if k else ""
        rows.append([model, str(k), f"{r['method']}: {how}{scoring_cells(s, r)[0]}", fmt(dev), value_cell(chosen),
                     fmt(uncalibrated), "–" if uncalibrated is None else fmt(chosen["mean"] - uncalibrated)])
    header = ["model", "k", "chosen on dev (draw; scoring rule, answer words)", f"dev {name}", f"test {name}",
              f"test {name} by per-token mean, uncalibrated", "chosen − uncalibrated"]
    return [("h4", "Best prompting configuration per k, chosen on dev"), ("p", BEST_BY_K_TEXT), table(header, rows)]


DRAW_COST_TEXT = (
    "What each way of drawing demonstrations cost, per k: mean wall seconds of a run's job (loading, the dev "
    "choice of scoring rule and answer words, prompting the test rows, writing) and per test row, and the "
    "inference seconds per test row. A draw per test text prompts a different prefix for every row (and, with "
    "contextual calibration, its content-free inputs once per row), where one draw per run shares it.")


def draw_cost_blocks(s: Scope) -> list:
    """Mean cost of the prompting runs by model, k and demonstration draw (runs.csv's cost columns)."""
    if not {"demonstration_draw", "wall_time_s", "n_test"} <= set(s.runs.columns):
        return []
    runs = s.runs.filter(~folded(s.runs)).filter((pl.col("family") == "icl") & pl.col("n_test").is_not_null()
                                                 & pl.col("demonstration_draw").is_not_null())
    if runs.is_empty():
        return []
    rows = []
    per_row = lambda column: pl.col(column).cast(pl.Float64, strict=False) / pl.col("n_test")  # noqa: E731
    for (model, k, draw), part in runs.sort("model", "k", "demonstration_draw").group_by(
            ["model", "k", "demonstration_draw"], maintain_order=True):
        wall = part.select(per_row("wall_time_s"))["wall_time_s"].mean()
        inference = part.select(per_row("eval_time_s"))["eval_time_s"].mean() if "eval_time_s" in part.columns else None
        rows.append([model, str(k or 0), DRAW_NAMES.get(draw, draw), str(part.height),
                     fmt(mean_of(part, "wall_time_s"), 1), fmt(wall, 2), fmt(inference, 2)])
    header = ["model", "k", "demonstration draw", "runs", "wall seconds per run", "wall seconds per test row",
              "inference seconds per test row"]
    return [("h4", "Cost of each demonstration draw"), ("p", DRAW_COST_TEXT), table(header, rows)]


def scoring_cells(s: Scope, r: dict) -> list[str]:
    """The scoring rules the runs chose (with their answer words), and their mean test metric under the
    per-token mean rule ('–' where the run recorded none: a fixed rule, or generated answers)."""
    if r.get("decoding") == "generate":
        return ["generated", "–"]
    runs = group_runs(s, r["model"], r["method"])
    chosen = ["/".join(sorted(set(runs[c].drop_nulls().cast(pl.String).to_list())))
              for c in ("scoring", "verbaliser") if c in runs.columns]
    return [", ".join(c for c in chosen if c) or "–", fmt(mean_of(runs, f"{s.primary}_mean"))]


def comparisons_section(s: Scope) -> list:
    if s.comparisons.is_empty():
        return []
    name = metric_name(s.primary)
    header = ["method a", "method b", f"{name} of a", f"{name} of b", "a − b [CI]", "relative gain [CI]",
              "shared test rows", *(["McNemar p"] if s.task == "classification" else []),
              "a − b without near-duplicates of train [CI]"]
    rows, gains = [], []
    for (a, ma, b, mb), pair in s.comparisons.group_by(["a", "model_a", "b", "model_b"], maintain_order=True):
        by_metric = {r["metric"]: r for r in pair.iter_rows(named=True)}
        r = by_metric.get(s.primary)
        if r is None:
            continue
        rows.append([label(a, ma), label(b, mb), fmt(r["value_a"]), fmt(r["value_b"]),
                     f"{fmt(r['difference'])} {fmt_ci(r['ci_low'], r['ci_high'])}",
                     f"{fmt_pct(r['relative_gain_pct'])} {pct_ci(r)}", str(r["n_test"]),
                     *([fmt_p(r["mcnemar_p"])] if s.task == "classification" else []), near_dup_gap_cell(r)])
        gains.append(gain_sentence(s, label(a, ma), label(b, mb), by_metric))
    return [("h3", "Paired comparisons (same test examples)"), table(header, rows), ("h3", "Relative gains"),
            ("p", "As Wang (2024) reports fine-tuning against a dictionary: the change of a over b in percent of b, "
                  "with its paired-bootstrap interval (given only where b's own interval lies above 0; otherwise "
                  "it would be a ratio to noise). Every metric is in comparisons.csv."),
            ("list", gains)]


def near_dup_gap_cell(r: dict) -> str:
    """'0.394 [0.214, 0.566] (3 rows dropped)': a comparison row's a − b without the near-duplicates of train."""
    if r.get("difference_no_near_dup") is None:
        return ""
    return (f"{fmt(r['difference_no_near_dup'])} {fmt_ci(r['ci_low_no_near_dup'], r['ci_high_no_near_dup'])} "
            f"({fmt_int(r['near_dup_rows_dropped'])} rows dropped)")


def pct_ci(r: dict) -> str:
    low, high = r["relative_ci_low"], r["relative_ci_high"]
    return "" if low is None or np.isnan(low) else f"[{fmt_pct(low)}, {fmt_pct(high)}]"


def gain_sentence(s: Scope, a: str, b: str, by_metric: dict) -> str:
    parts = []
    for metric in dict.fromkeys([s.primary, SECOND_METRIC[s.task]]):
        r = by_metric.get(metric)
        if r is None:
            continue
        if r["relative_gain_pct"] is None or np.isnan(r["relative_gain_pct"]):
            parts.append(f"{metric_name(metric)}: no relative gain (b's interval reaches 0; difference "
                         f"{fmt(r['difference'])} {fmt_ci(r['ci_low'], r['ci_high'])})")
        else:
            parts.append(f"{fmt_pct(r['relative_gain_pct'])} {metric_name(metric)} {pct_ci(r)}".strip())
    return f"{a} vs {b}: " + ", ".join(parts)


def parse_rules_section(s: Scope) -> list:
    """Generated answers under the three parse-failure rules, beside their unparseable rate."""
    if s.task != "classification":
        return []
    by = {(r["model"], r["method"] + suffix, r["metric"]): r["mean"]
          for frame, suffix in ((s.summary, ""), (s.generated, ", generated answers"))
          for r in frame.iter_rows(named=True)}
    parsed = [(model, method) for (model, method, metric) in by if metric == "unparseable_rate"]
    if not parsed:
        return []
    name = metric_name(s.primary)
    header = ["method", "model", "unparseable rate", f"{name}: count as wrong", "map to neutral (FinGPT)",
              "drop (PIXIU)"]
    rows = [[method, model, *(fmt(by.get((model, method, m))) for m in
                              ("unparseable_rate", s.primary, f"as_neutral_{s.primary}", f"dropped_{s.primary}"))]
            for model, method in parsed]
    text = ("Free-generation answers that name no label: ours count them as wrong; FinGPT's benchmark maps them to "
            "neutral; PIXIU/FinBen-style scoring leaves them out (so its metric is over the parsed answers only). "
            "Published generative figures follow their authors' rule.")
    return [("h3", "Unparseable answers under three scoring rules"), ("p", text), table(header, rows)]


def strata_section(s: Scope) -> list:
    if s.strata is None or s.strata.is_empty():
        return []
    strata = s.strata.filter(pl.col("metric") == s.primary)
    levels = strata.unique("agreement", maintain_order=True).sort("agreement", descending=True)
    sizes = dict(zip(levels["agreement"].to_list(), levels["n_test"].to_list()))
    rows = []
    for r in s.ranked.iter_rows(named=True):
        mine = strata.filter((pl.col("model") == r["model"]) & (pl.col("method") == r["method"]))
        values = dict(zip(mine["agreement"].to_list(), mine["mean"].to_list()))
        if values:
            rows.append([r["method"], r["model"], *(fmt(values.get(level)) for level in sizes)])
    text = (f"{metric_name(s.primary)} on the test sentences of each annotator-agreement level (a sentence's "
            "highest level; means over seeds; strata.csv has every metric). Errors on sentences annotators "
            "disagreed on are partly label noise.")
    header = ["method", "model", *(f"{level} (n = {n})" for level, n in sizes.items())]
    return [("h3", "Scores by annotator agreement"), ("p", text), table(header, rows)]


COST_TEXT = (
    "Means over seeds. The dev selection of the settings ran once per method and dataset; inference is given per "
    "1,000 test rows, and the total counts it on the whole test set, so that full-test and test-subset runs "
    "compare. Precision is the one used (auto resolves to bf16 only where the CPU or GPU has fast bf16). The job "
    "wall time also holds loading, the dev scoring of prompts and writing.")


def cost_section(s: Scope) -> list:
    header = ["method", "model", "trainable params", "share trainable", "train (s)", "dev selection (s)",
              "inference (s per 1,000 test rows)", "total (s)", "precision", "peak memory (MB)", "tokens/s",
              "job wall time (s)"]
    rows = []
    for r in s.ranked.iter_rows(named=True):
        runs = group_runs(s, r["model"], r["method"])
        c = group_cost(s, r["model"], r["method"])
        share = None if c["trainable"] is None or not c["params"] else c["trainable"] / c["params"]
        rows.append([r["method"], r["model"], fmt_int(c["trainable"]), "–" if share is None else f"{share:.3%}",
                     fmt(c["train"], 1), fmt(c["selection"], 1), fmt(c["per_1000"], 1), fmt(c["total"], 1),
                     precision_cell(runs), fmt_int(mean_of(runs, "peak_rss_mb")), fmt_int(mean_of(runs, "tokens_per_s")),
                     fmt(mean_of(runs, "wall_time_s"), 1)])
    return [("h3", "Cost"), ("p", COST_TEXT), table(header, rows)]


def precision_cell(runs: pl.DataFrame) -> str:
    def joined(column):
        return "/".join(sorted(set(runs[column].drop_nulls().cast(pl.String).to_list()))) \
            if column in runs.columns else ""
    precision, path = joined("precision") or "–", joined("qlora_path")
    return f"{precision} ({path})" if path else precision


def figures_section(s: Scope) -> list:
    ranked = list(s.ranked.iter_rows(named=True))
    name = metric_name(s.primary)
    blocks = [("h3", "Figures"),
              save_figure(s, plots.by_method([label(r["method"], r["model"]) for r in ranked],
                                             [r["mean"] for r in ranked], [r["ci_low"] for r in ranked],
                                             [r["ci_high"] for r in ranked], name),
                          "by-method", f"{name} by method with its interval.")]
    blocks += params_plot(s, ranked)
    blocks += k_shot_plot(s)
    return blocks


def params_plot(s: Scope, ranked: list[dict]) -> list:
    points = []
    for r in ranked:
        trainable, family = group_cost(s, r["model"], r["method"])["trainable"], family_of(s, r["model"], r["method"])
        if trainable is not None:   # a log axis cannot show 0: drawn at 1
            points.append({"x": max(trainable, 1.0), "y": r["mean"], "label": label(r["method"], r["model"]),
                           "group": FAMILY_NAMES.get(family, family)})
    if not points:
        return []
    fig = plots.against_cost(points, "trainable parameters (log axis; 0 drawn at 1)", metric_name(s.primary),
                             s.direction)
    return [save_figure(s, fig, "vs-params", f"{metric_name(s.primary)} against trainable parameters; the grey "
                                             "line joins the Pareto front (no method is better with fewer).")]


def k_shot_points(s: Scope) -> list[dict]:
    """(series, k, model, method) of the few-shot runs; a zero-shot run joins every series of its model."""
    rows = []
    for r in s.runs.unique(["model", "method"], maintain_order=True).iter_rows(named=True):
        entry = registered(r)
        if entry is None or entry.curve is None:
            continue
        generated = r.get("decoding") == "generate"
        key = entry.examples_key or entry.per_class_key
        k = (r.get(key) or 0) if key else 0
        if entry.curve == "prompts":
            series = f"{r['model']} · ICL {r.get('selection') or ''}".strip()
            series += " · generated answers" if generated else ""
        else:
            series = f"{r['model']} · embedding {r.get('classifier') or 'centroid'}"
        # A zero-shot point joins the curves of its model, family and kind of answer.
        rows.append({"series": series, "k": int(k), "model": r["model"], "method": r["method"],
                     "kind": (r["model"], entry.curve, generated)})
    curves = [r for r in rows if r["k"]]
    out = list(curves)
    for r in rows:
        if not r["k"]:
            out += [{**r, "series": c["series"]} for c in curves if c["kind"] == r["kind"]] or [r]
    return out


def k_shot_plot(s: Scope) -> list:
    points = k_shot_points(s)
    if len({p["k"] for p in points}) < 2:   # a single k is no curve
        return []
    stats = {(r["model"], r["method"]): r for r in
             pl.concat([s.summary, s.generated.with_columns(pl.col("method") + GENERATED)])
             .filter(pl.col("metric") == s.primary).iter_rows(named=True)}
    series: dict[str, list] = {}
    for p in sorted(points, key=lambda p: (p["series"], p["k"])):
        r = stats.get((p["model"], p["method"]))
        if r is not None:
            series.setdefault(p["series"], []).append((p["k"], r["mean"], r["ci_low"], r["ci_high"]))
    curves = {name: tuple(np.array(v, dtype=float) for v in zip(*values)) for name, values in sorted(series.items())}
    fig = plots.k_shot(curves, metric_name(s.primary))
    return [save_figure(s, fig, "k-shot", "Few-shot curve: metric against k (shots per class for embedding "
                                          "few-shot, demonstrations for ICL); k = 0 is zero-shot.")]


def selection_section(s: Scope) -> list:
    """One figure per method whose learning rate was chosen on dev: the dev metric of each trial."""
    if "dev_by_value" not in s.runs.columns:
        return []
    # A rate borrowed from another method (learning_rate_from) is that method's figure already;
    # a `-gen` row is the same run's generated answers: the same trials.
    own = pl.col("learning_rate_from").is_null() if "learning_rate_from" in s.runs.columns else pl.lit(True)
    own = own & ~pl.col("method").str.ends_with(GENERATED) & pl.col("chosen_on_dev").str.starts_with("learning_rate=")
    chosen = s.runs.filter(pl.col("dev_by_value").is_not_null() & own).unique(["model", "method"], maintain_order=True)
    blocks = []
    for r in chosen.iter_rows(named=True):
        pairs = sorted((float(lr), float(v)) for lr, v in (item.split(":") for item in r["dev_by_value"].split()))
        metric = metric_name(r["selection_dev_metric"] or "dev metric")
        name = label(r["method"], r["model"])
        fig = plots.learning_rate_trace(pairs, float(r["chosen_on_dev"].split("=")[1]), name, f"dev {metric}")
        steps = f" ({fmt_int(r.get('trial_steps'))} steps each)" if r.get("trial_steps") is not None else ""
        blocks.append(save_figure(s, fig, "lr-selection", f"{name}: dev {metric} of the learning-rate trials"
                                  f"{steps}; the star is the rate every seed trained at.", method=r["method"]))
    return [("h3", "Learning-rate selection on dev"), *blocks] if blocks else []


def dictionary_section(s: Scope, n: int) -> list:
    blocks = []
    for r in s.runs.sort("seed").unique(["model", "method"], keep="first", maintain_order=True).iter_rows(named=True):
        if not getattr(registered(r), "word_weights", False):
            continue
        path = Path(r["run_dir"]) / "dictionary.csv"
        blocks.append(("h3", f"Strongest words of {label(r['method'], r['model'])} (seed {r['seed']})"))
        if not path.exists():
            blocks.append(("p", f"{path} was not found."))
            continue
        blocks += [("p", "Largest learned weights among words seen in training (weight in brackets)."),
                   strongest_words(pl.read_csv(path), n)]
    return blocks


def strongest_words(words: pl.DataFrame, n: int):
    """A table with the top n words per class (classification) or per direction (regression)."""
    if "weight" in words.columns:
        columns = {"raises the score": (words.filter(pl.col("weight") > 0).sort("weight", descending=True), "weight"),
                   "lowers the score": (words.filter(pl.col("weight") < 0).sort("weight"), "weight")}
    else:
        columns = {c.removeprefix("weight_"): (words.filter(pl.col(c) > 0).sort(c, descending=True), c)
                   for c in words.columns if c.startswith("weight_")}
    rows = [[f"{ranked['word'][i]} ({ranked[key][i]:+.2f})" if i < ranked.height else ""
             for ranked, key in columns.values()] for i in range(n)]
    return ("table", list(columns), rows)


# ---- the sections around the datasets -----------------------------------------------------------------------

def which_study(study: str, full_study_command: str, config_file: str | None) -> str:
    """The report's first line: which study this is, and for the quick one how to run the full one."""
    source = f" (config `{config_file}`)" if config_file else ""
    if study == "quick":
        return (f"**This is the quick study**{source}: the full protocol sized down for a first look in about a "
                f"quarter of an hour — fewer training rows and steps, smaller grids, fewer seeds, a smaller test "
                f"subset for prompting, each strategy on fewer datasets (the sizes are in the settings below). Its "
                f"numbers are not the study's: run the full study with "
                f"`{full_study_command}` for the results README quotes.")
    return f"**This is the full study**{source}: the protocol whose results README quotes."


def title(study: str) -> list:
    return [("h1", f"tunebench ({study} study): which adaptation strategy wins, by how much, and at what cost")]


def reading_notes(summary: pl.DataFrame, anchors_note: str) -> list:
    """How the intervals and tests were made."""
    confidence = summary["confidence"].drop_nulls()
    level = f"{confidence[0]:.0%}" if len(confidence) else "95%"
    many = summary.filter(pl.col("n_seeds") > 1).height > 0
    how = (f"Intervals are {level} percentile bootstrap intervals with a fixed seed. With one seed they resample "
           "the test examples. ")
    how += ("With several seeds (n_seeds > 1) they resample seeds as well as test examples (a two-level "
            "bootstrap), so they hold both training randomness and test-set sampling; the value shown is the "
            "mean over seeds ± its sd. " if many else "Every method here ran with one seed, so the intervals "
            "hold test-set sampling only, not training randomness. ")
    how += clusters_text(summary)
    how += ("Paired comparisons resample the same test examples for both methods; McNemar's p is the exact "
            "binomial test on the discordant examples: with several seeds on either side, the largest p over "
            "every pair of their seeds (a's seeds × b's; comparisons.csv, column mcnemar_pairs).")
    return [("h2", "How to read the numbers"), ("p", how),
            ("p", "Published figures appear in their own tables, never averaged with ours. " + anchors_note)]


CLUSTER_NAMES = {"group": "group (the table's `group` column)", "duplicates": "near-duplicate unit"}


def clusters_text(summary: pl.DataFrame) -> str:
    """Which datasets' intervals resample clusters of test examples rather than examples (config key cluster)."""
    if "resampling_unit" not in summary.columns:
        return ""
    clustered = (summary.filter(pl.col("resampling_unit").is_not_null() & (pl.col("resampling_unit") != "row"))
                 .unique("dataset", maintain_order=True))
    if clustered.is_empty():
        return ""
    which = ", ".join(f"{d} by {CLUSTER_NAMES.get(u, u)}"
                      for d, u in zip(clustered["dataset"].to_list(), clustered["resampling_unit"].to_list()))
    return (f"Where test examples are not independent they are resampled in clusters, whole clusters at a time "
            f"(config key cluster; resampling_unit in summary.csv and comparisons.csv): {which}. ")


def other_anchors(anchors: list[dict]) -> list:
    if not anchors:
        return []
    return [("h2", "Published figures on other datasets"),
            ("p", "Other domains, claims and costs from the literature, for context only."), anchor_table(anchors)]


SETTINGS_TEXT = (
    "Every tuned setting was chosen on the dev split, per dataset, never on test. Trained strategies: a trial per "
    "learning rate on each selection seed (the mean dev metric decides; within one standard error, the rate whose "
    "seeds disagree least), either as long as the final run (each selection seed's winning trial is then its run) or "
    "shortened to trial_fraction of its optimizer steps (the trial length column), after as many rounds of successive"
    " halving as the column says (each trains every remaining rate a fraction of the budget and keeps the better "
    "half), then every seed trained at the chosen rate. Heads and baselines: each penalty of the grid fitted to "
    "convergence. Every grid grows by one point past its edge while the choice sits there (\"grown from\" names the "
    "declared grid); \"edge\" marks a choice still on an edge because the growth bound was hit (a choice on an edge "
    "whose neighbour scores the same sits on a plateau and is not marked). Prompting: each run's answer words and "
    "scoring rule by prompting a fixed dev sample with the run's own demonstrations. Other settings (budgets, k, "
    "templates) are fixed in the config, the same for every method of a family.")


def dev_choices(runs: pl.DataFrame) -> list:
    """How the settings were chosen: the value each method took on dev, from which grid, at what cost."""
    if "chosen_on_dev" not in runs.columns:
        return []
    chosen = runs.filter(pl.col("chosen_on_dev").is_not_null() & ~folded(runs)).unique(
        ["dataset", "model", "method"], maintain_order=True)
    rows = [[r["dataset"], label(r["method"], r["model"]),
             r["chosen_on_dev"] + (f" (by {r['learning_rate_from']})" if r.get("learning_rate_from") else ""),
             grid_cell(r), edge_cell(r), str(r.get("selection_seeds") or "–"), halving_cell(r), dev_values(r),
             trial_cell(r), fmt(r.get("selection_time_s"), 1)]
            for r in chosen.iter_rows(named=True)]
    header = ["dataset", "method", "chosen on dev", "values tried", "on an edge", "seeds averaged",
              "successive-halving rounds", "dev metric by value", "trial length (optimizer steps)",
              "selection time (s)"]
    return [("h2", "How settings were chosen"), ("p", SETTINGS_TEXT), table(header, rows)]


def folded(frame: pl.DataFrame) -> pl.Series:
    """True for the `-gen` rows whose method has a row of its own: the same run, listed once."""
    keys = list(zip(frame["dataset"].to_list(), frame["model"].to_list(), frame["method"].to_list()))
    present = set(keys)
    return pl.Series([m.endswith(GENERATED) and (d, model, m.removesuffix(GENERATED)) in present
                      for d, model, m in keys], dtype=pl.Boolean)


def numeric_order(values: list[str]) -> list[str]:
    """Numbers by value (3e-05 before 0.0001), anything else as given."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return values


def grid_cell(row: dict) -> str:
    """The values tried, and the declared grid when the search grew it."""
    grid, declared = row.get("grid"), row.get("declared_grid")
    if not grid:
        return "–"
    grid, declared = " ".join(numeric_order(str(grid).split())), " ".join(numeric_order(str(declared or "").split()))
    return f"{grid} (grown from {declared})" if declared and declared != grid else grid


def edge_cell(row: dict) -> str:
    if str(row.get("on_edge")).lower() != "true":
        return ""
    return "edge (growth bound hit)" if str(row.get("grid_bound_hit")).lower() == "true" else "edge"


def dev_values(row: dict) -> str:
    """'1e-4: 0.612, 3e-4: 0.701' from the runs table's dev_by_value ('' for a choice without a trace)."""
    pairs = dict(item.rsplit(":", 1) for item in str(row.get("dev_by_value") or "").split())
    metric = metric_name(row.get("selection_dev_metric") or "")
    values = ", ".join(f"{v}: {float(pairs[v]):.3f}" for v in numeric_order(list(pairs)))
    return f"{metric} {values}" if metric and pairs else values


def halving_cell(row: dict) -> str:
    """The successive-halving rounds before the full-length trials ('–' for a choice made without a search)."""
    rounds = row.get("halving_rounds")
    return "–" if rounds is None else str(int(rounds))


def trial_cell(row: dict) -> str:
    if row.get("trial_steps") is not None:
        return fmt_int(row["trial_steps"])
    if str(row.get("chosen_on_dev")).startswith("learning_rate="):
        return "as long as the run"
    return "–"   # a penalty fitted to convergence, or a prompt scored on the dev sample: no trial


def caps(runs: pl.DataFrame) -> list:
    capped = []
    for column in ("max_train_samples", "test_subset"):
        if column in runs.columns:
            rows = runs.filter(pl.col(column).is_not_null() & (pl.col(column).cast(pl.String) != "false"))
            rows = rows.filter(~folded(rows)).unique(["dataset", "model", "method"], maintain_order=True)
            capped += [f"{r['dataset']}: {label(r['method'], r['model'])} — " +
                       (f"{column} = {r[column]}" if column == "max_train_samples" else
                        f"scored on the fixed test subset ({fmt_int(r.get('n_test'))} rows)")
                       for r in rows.iter_rows(named=True)]
    text = ("These runs used a cap on training or test rows, so they saw less data than the others:"
            if capped else "No run was capped: every method trained and was tested on all its rows.")
    return [("h2", "Capped runs"), ("p", text)] + ([("list", capped)] if capped else [])
