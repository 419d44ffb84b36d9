"""Finished runs → four tables: runs.csv, summary.csv, comparisons.csv and strata.csv.

A run with `decoding: both` counts as two: its scored answers under its own name and its freely generated
answers as `<method>-gen` (their metrics are the run's metrics.json `generate` block).

runs.csv        one row per run: identity, every scalar metric, the cost facts, the method's key settings, the
                setting chosen on dev (learning rate or head penalty, and whether it sits on the grid's edge)
                and the did-it-learn check.
summary.csv     long format, one row per (dataset, model, method, metric): mean and sd over seeds and a
                bootstrap CI — over test examples with one seed, over seeds and test examples with several
                (see stats.py); test examples are resampled in the clusters the dataset declares (config
                key datasets.<name>.cluster; column resampling_unit). Metrics are recomputed from
                predictions.parquet with the same vectorised functions for the point and every resample, and
                checked against metrics.json. For a dataset whose table flags test rows near_duplicate_of_train
                (a test split the source fixes, such as TFNS's), the same statistics on each run's test rows
                without them: columns mean_no_near_dup, sd_no_near_dup, ci_low_no_near_dup,
                ci_high_no_near_dup and near_dup_rows_dropped (runs.csv: <metric>_no_near_dup of the
                headline metrics and near_dup_rows_dropped).
comparisons.csv for each configured pair [a, b] and dataset: a − b per metric with its paired-bootstrap CI,
                the relative gain in percent with its CI, and McNemar's exact p (classification): the largest
                over every pair of a's and b's seeds (their number in mcnemar_pairs). Where the dataset has
                near-duplicates of train in test: a − b and its interval without them (*_no_near_dup).
                Methods on different models (an encoder vs a generative model) are compared where no
                same-model pair exists.
strata.csv      datasets with an `agreement` column (FPB): each group's test metrics on the sentences of each
                annotator-agreement level (mean over seeds) — how much of the error sits in the ambiguous ones.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tunebench import files, paths
from tunebench.data.splits import bootstrap_clusters
from tunebench.evaluation import stats
from tunebench.families import NO_MODEL
from tunebench.evaluation.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

IDENTITY = ["dataset", "task", "model", "method", "strategy", "family", "seed", "loader", "split_method"]
COST_ORDER = ["trainable_params", "total_params", "trainable_fraction", "train_time_s", "eval_time_s",
              "wall_time_s", "peak_rss_mb", "tokens_per_s", "train_rows"]
# Method settings a reader needs beside the numbers: shots (embedding few-shot) and k (ICL demonstrations;
# for top_k the number of trained layers), and the caps.
SETTINGS = ["shots", "k", "selection", "classifier", "decoding", "r", "variant",
            "max_train_samples", "test_subset"]
DEV_CHOICE = ["chosen_on_dev", "learning_rate_from", "grid", "on_edge", "declared_grid", "grid_extensions",
              "grid_bound_hit", "selection_seeds", "halving_rounds", "dev_by_value", "selection_dev_metric",
              "selection_dev_value", "trial_steps", "selection_time_s", "learned", "learning_note"]
TOLERANCE = 1e-6  # recomputed vs recorded metric
NEAR_DUP = "_no_near_dup"   # suffix of a metric on the test rows without the near-duplicates of train
HEADLINE_METRICS = ["macro_f1", "accuracy", "r2", "mse"]   # the ones runs.csv gives without them too
SUMMARY_SCHEMA = {"dataset": pl.String, "task": pl.String, "model": pl.String, "method": pl.String,
                  "metric": pl.String, "mean": pl.Float64, "sd": pl.Float64, "ci_low": pl.Float64,
                  "ci_high": pl.Float64, "n_seeds": pl.Int64, "ci_over": pl.String, "confidence": pl.Float64,
                  "resampling_unit": pl.String, "mean_no_near_dup": pl.Float64, "sd_no_near_dup": pl.Float64,
                  "ci_low_no_near_dup": pl.Float64, "ci_high_no_near_dup": pl.Float64,
                  "near_dup_rows_dropped": pl.Int64}
CI_OVER = {False: "test examples", True: "seeds and test examples"}
COMPARISON_SCHEMA = {"dataset": pl.String, "task": pl.String, "a": pl.String, "model_a": pl.String,
                     "b": pl.String, "model_b": pl.String, "metric": pl.String, "value_a": pl.Float64,
                     "value_b": pl.Float64, "difference": pl.Float64, "ci_low": pl.Float64,
                     "ci_high": pl.Float64, "relative_gain_pct": pl.Float64, "relative_ci_low": pl.Float64,
                     "relative_ci_high": pl.Float64, "mcnemar_p": pl.Float64, "n_test": pl.Int64,
                     "n_seeds_a": pl.Int64, "n_seeds_b": pl.Int64, "mcnemar_pairs": pl.Int64,
                     "resampling_unit": pl.String, "difference_no_near_dup": pl.Float64,
                     "ci_low_no_near_dup": pl.Float64, "ci_high_no_near_dup": pl.Float64,
                     "near_dup_rows_dropped": pl.Int64}


@dataclass
class Run:
    record: dict              # metrics.json
    predictions: pl.DataFrame
    run_dir: Path

    @property
    def dataset(self) -> str:
        return self.record["dataset"]

    @property
    def model(self) -> str:
        return self.record["model"]

    @property
    def method(self) -> str:
        return self.record["method"]

    @property
    def seed(self) -> int:
        return self.record["seed"]

    @property
    def task(self) -> str:
        return self.record["task"]

    @property
    def group(self) -> tuple[str, str, str]:
        return self.dataset, self.model, self.method

    @property
    def name(self) -> str:
        return paths.run_key(self.dataset, self.model, self.method, self.seed)

    @property
    def labels(self) -> list[str]:
        return self.record["config"]["dataset"].get("labels") or []

    @property
    def method_cfg(self) -> dict:
        return self.record["config"].get("method") or {}

    @property
    def has_unparsed(self) -> bool:
        return "unparseable_rate" in self.record["metrics"]

    @property
    def ids(self) -> list[str]:
        return self.predictions["id"].to_list()

    def arrays(self, ids: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """gold, prediction and an unparsed flag, in the order of `ids` (default: all, sorted by id).

        Classification comes as integer codes: labels 0..L-1, answers outside the labels L, L+1, ... An
        unparsed regression answer is charged the method's penalty, as runner.score does.
        """
        df = self.predictions
        if ids is not None:
            df = pl.DataFrame({"id": ids}).join(df, on="id", how="left", maintain_order="left")
        gold, pred = df["gold"].to_list(), df["prediction"].to_list()
        unparsed = np.array([p is None for p in pred])
        if self.task == "classification":
            codes = {label: i for i, label in enumerate(self.labels)}
            for p in sorted({str(p) for p in pred if p not in codes}):
                codes[p] = len(codes)
            return (np.array([codes[g] for g in gold]), np.array([codes[p if p in codes else str(p)] for p in pred]),
                    unparsed)
        penalty = self.method_cfg.get("unparsed_penalty", 0.0)
        gold = np.asarray(gold, dtype=float)
        pred = np.array([g - penalty if p is None else p for g, p in zip(gold, pred)], dtype=float)
        return gold, pred, unparsed

    def metric_fn(self):
        """The metrics of this run as a function of (resampled) gold, prediction and unparsed arrays."""
        n_labels = len(self.labels)

        def fn(gold, pred, unparsed, weight=None):
            if self.task == "classification":
                out = stats.classification_metrics(gold, pred, n_labels, weight=weight)
            else:
                out = stats.regression_metrics(gold, pred, weight)
            if self.has_unparsed:
                out["unparseable_rate"] = stats.mean(unparsed, weight)
            return out

        return fn


def load_run(metrics_path, predictions_path) -> Run:
    record = json.loads(Path(metrics_path).read_text())
    predictions = pl.read_parquet(predictions_path).sort("id")
    return Run(record, predictions, Path(metrics_path).parent)


def generated_run(run: Run) -> Run | None:
    """The freely generated answers of a `decoding: both` run, as the run `<method>-gen`."""
    generated = run.record["metrics"].get("generate")
    if not isinstance(generated, dict) or "generated_prediction" not in run.predictions.columns:
        return None
    config = {**run.record["config"], "method": {**run.method_cfg, "decoding": "generate"}}
    record = {**run.record, "method": f"{run.method}-gen", "metrics": generated, "config": config}
    predictions = run.predictions.select("id", "gold", pl.col("generated_prediction").alias("prediction"))
    return Run(record, predictions, run.run_dir)


def with_generated_runs(runs: list[Run]) -> list[Run]:
    return [r for run in runs for r in (run, generated_run(run)) if r is not None]


class Bootstrap:
    """Replicates of each run's metrics on a given list of test ids, computed once and cached. `clusters`:
    dataset → {test id: cluster} for the datasets whose examples are resampled in clusters."""

    def __init__(self, samples: int, clusters: dict[str, dict[str, str]] | None = None,
                 units: dict[str, str] | None = None):
        self.samples = samples
        self.clusters = clusters or {}
        self.units = units or {}
        self._cache: dict = {}

    def unit(self, dataset: str) -> str:
        """What the example level resamples: `row`, or the dataset's cluster setting (`group`, `duplicates`)."""
        return self.units.get(dataset) or "row"

    def of(self, run: Run, ids: list[str] | None = None) -> dict[str, tuple[float, np.ndarray]]:
        key = (run.name, None if ids is None else hash(tuple(ids)))
        if key not in self._cache:
            clusters = None
            if run.dataset in self.clusters:
                of_id = self.clusters[run.dataset]
                missing = [i for i in (ids or run.ids) if i not in of_id]
                if missing:
                    raise ValueError(f"{run.name}: test id '{missing[0]}' is not in the dataset's table, so it has "
                                     f"no cluster (cluster: {self.unit(run.dataset)})")
                clusters = [of_id[i] for i in (ids or run.ids)]
            self._cache[key] = stats.replicates(run.metric_fn(), run.arrays(ids), self.samples, clusters=clusters)
        return self._cache[key]


def group_seed(group) -> int:
    """A stable seed per (dataset, model, method) for the draw of seeds in the two-level bootstrap."""
    return zlib.crc32("/".join(map(str, group)).encode())


# ---- runs.csv ---------------------------------------------------------------------------------------------

def _scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def run_row(run: Run) -> dict:
    rec = run.record
    row = {k: rec.get(k) for k in IDENTITY if k not in ("loader", "split_method")}
    row["loader"] = rec["config"]["dataset"].get("loader")
    row["split_method"] = (rec["config"]["dataset"].get("split") or {}).get("method")
    row.update({k: v for k, v in rec["metrics"].items() if _scalar(v)})
    per_class = rec["metrics"].get("per_class")
    if isinstance(per_class, dict):   # the F1 of every class, for the report's per-class table
        row.update({f"f1_{label}": values["f1"] for label, values in per_class.items()})
    cost = {k: v for k, v in rec.get("cost", {}).items() if _scalar(v)}
    if cost.get("trainable_params") is not None and cost.get("total_params"):
        cost["trainable_fraction"] = cost["trainable_params"] / cost["total_params"]
    row.update(cost)
    row.update({k: run.method_cfg.get(k) for k in SETTINGS if k in run.method_cfg})
    row.update(chosen_on_dev(run))
    check = rec.get("cost", {}).get("learning_check")
    if isinstance(check, dict):
        row.update(learned=check["learned"], learning_note=check["reason"])
    provenance = rec.get("provenance") or {}
    machine = provenance.get("hardware") or {}
    row.update(git_commit=provenance.get("git_commit"), started=provenance.get("started"),
               ended=provenance.get("ended"),
               cpu=f"{machine['cpu']} ({machine.get('cpu_count')} cores)" if machine.get("cpu") else None)
    row["data_table"] = (rec.get("data") or {}).get("table")   # beside it the dataset's manifest.json
    row["run_dir"] = str(run.run_dir)
    return row


def chosen_on_dev(run: Run) -> dict:
    """What was chosen on dev for this run: the learning rate from its grid (rule tune_<family>), a head's or
    baseline's regularisation from its grid, or a prompt's answer words and scoring rule; the values tried (the
    declared grid and its growth past the edge), whether the choice is still on an edge (only when the growth
    bound was hit), and the seeds the choice averaged."""
    cost = run.record.get("cost", {})
    selection, head, grown = cost.get("selection"), cost.get("selected"), cost.get("grid_search")
    if isinstance(selection, dict):
        by_value = selection.get("dev_by_learning_rate") or selection.get("dev_by_value") or {}
        return {"chosen_on_dev": f"learning_rate={selection['chosen']:g}",
                "learning_rate_from": selection.get("from_method"), "grid": _grid(selection["grid"]),
                "on_edge": bool(selection["on_edge"]), "selection_time_s": selection.get("selection_time_s"),
                "dev_by_value": " ".join(f"{lr}:{value:.4f}" for lr, value in by_value.items()) or None,
                "selection_dev_metric": selection.get("dev_metric"), "trial_steps": selection.get("trial_steps"),
                **_search_facts(selection)}
    prompt = cost.get("prompt_selection")
    if isinstance(prompt, dict):   # icl: answer words and scoring rule chosen on the dev sample
        by_candidate = prompt.get("dev_by_candidate") or {}
        return {"chosen_on_dev": f"verbaliser={prompt['verbaliser']} scoring={prompt['scoring']}",
                "dev_by_value": " ".join(f"{c}:{v:.4f}" for c, v in by_candidate.items()) or None,
                "selection_dev_metric": prompt.get("dev_metric"),
                "selection_dev_value": prompt.get("dev_value")}   # its time is in the run's own wall time
    if isinstance(grown, dict):
        by_value = grown.get("dev_by_value") or {}
        return {"chosen_on_dev": f"{grown['key']}={grown['chosen']:g}", "grid": _grid(grown["grid"]),
                "on_edge": bool(grown["on_edge"]),
                "dev_by_value": " ".join(f"{v}:{score:.4f}" for v, score in by_value.items()) or None,
                **_search_facts(grown)}
    if isinstance(head, dict) and len(head) == 1:
        (key, value), = head.items()
        grid = sorted(run.method_cfg.get(f"{key}_grid") or [value])
        return {"chosen_on_dev": f"{key}={value:g}", "grid": _grid(grid),
                "on_edge": len(grid) > 1 and value in (grid[0], grid[-1])}
    return {}


def _search_facts(trace: dict) -> dict:
    """How a grid search went (tunebench.selection): the declared grid, its growth, the seeds it averaged and
    its halving rounds (absent in traces made before the protocol had them)."""
    if "declared_grid" not in trace:
        return {}
    return {"declared_grid": _grid(trace["declared_grid"]), "grid_extensions": trace.get("extensions"),
            "grid_bound_hit": trace.get("extension_bound_hit"),
            "selection_seeds": " ".join(map(str, trace.get("seeds") or [])) or None,
            "halving_rounds": len(trace.get("halving_rounds") or [])}


def _grid(values) -> str:
    return " ".join(f"{v:g}" for v in values)


def runs_table(runs: list[Run], extra: dict[str, dict] | None = None) -> pl.DataFrame:
    """One row per run; `extra`: run name → columns computed beside the run (its metrics without the
    near-duplicates of train), placed after its metrics."""
    rows = [{**run_row(r), **(extra or {}).get(r.name, {})} for r in runs]
    seen = list(dict.fromkeys(k for row in rows for k in row))
    metric_order = CLASSIFICATION_METRICS + REGRESSION_METRICS + ["unparseable_rate"]
    metric_keys = {k for r in runs for k in r.record["metrics"]}
    cost_keys = {k for r in runs for k in r.record.get("cost", {})} | {"trainable_fraction"}
    metrics_cols = [k for k in metric_order if k in seen] + sorted(k for k in seen if k in metric_keys
                                                                   and k not in metric_order)
    cost_cols = [k for k in COST_ORDER if k in seen] + sorted(k for k in seen if k in cost_keys
                                                              and k not in COST_ORDER and k not in metrics_cols)
    metrics_cols += [k for k in seen if k.startswith("f1_") and k not in metrics_cols + cost_cols]
    metrics_cols += [k for k in ["near_dup_rows_dropped", *(m + NEAR_DUP for m in HEADLINE_METRICS)] if k in seen]
    settings_cols = [k for k in SETTINGS if k in seen and k not in metrics_cols + cost_cols]
    dev_cols = [k for k in DEV_CHOICE if k in seen]
    provenance_cols = ["git_commit", "cpu", "started", "ended", "data_table", "run_dir"]
    columns = IDENTITY + metrics_cols + cost_cols + settings_cols + dev_cols + provenance_cols
    return pl.DataFrame({c: [row.get(c) for row in rows] for c in columns}, strict=False)


# ---- summary.csv ------------------------------------------------------------------------------------------

def groups_of(runs: list[Run]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return {k: sorted(v, key=lambda r: r.seed) for k, v in groups.items()}


def checked_replicates(run: Run, boot: Bootstrap) -> dict:
    """The run's replicates on its own test ids; the point estimates must match metrics.json."""
    reps = boot.of(run)
    for metric, (point, _) in reps.items():
        recorded = run.record["metrics"].get(metric)
        if recorded is not None and np.isfinite(recorded) and abs(recorded - point) > TOLERANCE:
            raise ValueError(f"{run.name}: {metric} recomputed from predictions.parquet is {point:.6g}, "
                             f"but metrics.json says {recorded:.6g}")
    return reps


def summary_rows(group: tuple, runs: list[Run], boot: Bootstrap, confidence: float) -> list[dict]:
    dataset, model, method = group
    task = runs[0].task
    per_seed = [checked_replicates(r, boot) for r in runs]
    rows = []

    def row(metric, values, ci):
        values = np.asarray(values, dtype=float)
        return {"dataset": dataset, "task": task, "model": model, "method": method, "metric": metric,
                "mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                "ci_low": ci[0], "ci_high": ci[1], "n_seeds": len(values),
                "ci_over": None if ci[0] is None else CI_OVER[len(values) > 1], "confidence": confidence,
                "resampling_unit": None if ci[0] is None else boot.unit(dataset)}

    for metric in per_seed[0]:
        points = [reps[metric][0] for reps in per_seed]
        pooled = stats.pool_seeds(np.stack([reps[metric][1] for reps in per_seed]), group_seed(group))
        rows.append(row(metric, points, stats.percentile_ci(pooled, confidence)))
    # Metrics only some families report (e.g. coverage): mean and sd over seeds, no CI.
    extra = [k for k, v in runs[0].record["metrics"].items()
             if isinstance(v, (int, float)) and k not in per_seed[0] and k != "n_test"]
    for metric in extra:
        values = [r.record["metrics"].get(metric) for r in runs]
        if all(isinstance(v, (int, float)) for v in values):
            rows.append(row(metric, values, (None, None)))
    return rows


# ---- near-duplicates of train in test ---------------------------------------------------------------------

def flagged_test_ids(tables: dict[str, pl.DataFrame]) -> dict[str, set[str]]:
    """dataset → the ids of its test rows flagged near_duplicate_of_train (the key of a train or dev text),
    for each dataset whose table flags any: a test split the source or a published protocol fixes. A split we
    make never cuts a near-duplicate unit, so it flags none."""
    flagged = {}
    for dataset, table in tables.items():
        if "near_duplicate_of_train" in table.columns:
            ids = set(table.filter(pl.col("near_duplicate_of_train").fill_null(False))["id"].to_list())
            if ids:
                flagged[dataset] = ids
    return flagged


def kept_ids(run: Run, flagged: dict[str, set[str]]) -> list[str] | None:
    """The run's test ids without the near-duplicates of train; None where its dataset flags none."""
    if run.dataset not in flagged:
        return None
    return [i for i in run.ids if i not in flagged[run.dataset]]


def near_dup_facts(run: Run, boot: Bootstrap, flagged: dict[str, set[str]]) -> dict:
    """runs.csv's columns: the headline metrics on the test rows without the near-duplicates, and how many
    rows that drops."""
    kept = kept_ids(run, flagged)
    if not kept:
        return {}
    reps = boot.of(run, kept)
    return {"near_dup_rows_dropped": len(run.ids) - len(kept),
            **{f"{m}{NEAR_DUP}": reps[m][0] for m in HEADLINE_METRICS if m in reps}}


def near_dup_summary(group: tuple, runs: list[Run], boot: Bootstrap, flagged: dict[str, set[str]],
                     confidence: float) -> dict[str, dict]:
    """metric → summary.csv's *_no_near_dup columns for the group: mean, sd and interval as for all test rows
    (the same bootstrap, on each run's test rows without the near-duplicates), and the rows dropped."""
    kept = [kept_ids(r, flagged) for r in runs]
    if not all(kept):
        return {}
    per_seed = [boot.of(r, ids) for r, ids in zip(runs, kept)]
    dropped = max(len(r.ids) - len(ids) for r, ids in zip(runs, kept))
    out = {}
    for metric in per_seed[0]:
        points = np.array([reps[metric][0] for reps in per_seed], dtype=float)
        pooled = stats.pool_seeds(np.stack([reps[metric][1] for reps in per_seed]), group_seed(group))
        low, high = stats.percentile_ci(pooled, confidence)
        out[metric] = {"mean_no_near_dup": float(points.mean()),
                       "sd_no_near_dup": float(points.std(ddof=1)) if len(points) > 1 else None,
                       "ci_low_no_near_dup": low, "ci_high_no_near_dup": high, "near_dup_rows_dropped": dropped}
    return out


# ---- comparisons.csv --------------------------------------------------------------------------------------

def model_pairs(groups, dataset: str, a: str, b: str) -> list[tuple[str, str]]:
    """Same model where both methods use one, else against the model-free method; methods that share no model
    (a fine-tuned encoder vs a prompted LLM) are compared across models."""
    models_a = [m for (d, m, meth) in groups if d == dataset and meth == a]
    models_b = [m for (d, m, meth) in groups if d == dataset and meth == b]
    pairs = [(ma, mb) for ma in models_a for mb in models_b]
    return [(ma, mb) for ma, mb in pairs if ma == mb or NO_MODEL in (ma, mb)] or pairs


def mcnemar_p(runs_a: list[Run], runs_b: list[Run], ids: list[str]) -> tuple[float, int]:
    """Exact McNemar p, the largest over every (seed of a, seed of b) pair, and the number of pairs.

    Every pair or none: two methods' seeds are not paired (seed 0 of a fine-tuning and seed 0 of a k-shot draw
    share nothing), so testing the same-seed pairs only, or seed 0 alone beside a one-seed method, would pick
    some of equally valid tests; the largest p is one that every pair's test reaches."""
    def correct(run: Run) -> np.ndarray:
        gold, pred, _ = run.arrays(ids)
        return gold == pred

    correct_b = [correct(rb) for rb in runs_b]
    p_values = [stats.mcnemar_exact(correct(ra), b) for ra in runs_a for b in correct_b]
    return max(p_values), len(p_values)


def pooled(reps: list[dict], runs: list[Run], metric: str) -> tuple[float, np.ndarray]:
    """A group's metric, mean over its seeds, and its two-level bootstrap replicates (seeds and test rows)."""
    return (float(np.mean([r[metric][0] for r in reps])),
            stats.pool_seeds(np.stack([r[metric][1] for r in reps]), group_seed(runs[0].group)))


def comparison_rows(dataset, pair, runs_a, runs_b, boot, confidence, flagged=None) -> list[dict]:
    (a, model_a), (b, model_b) = pair
    ids = sorted(set.intersection(*(set(r.ids) for r in runs_a + runs_b)))
    if not ids:
        print(f"comparison {a} vs {b} on {dataset}: no test ids in common, skipped")
        return []
    reps_a = [boot.of(r, ids) for r in runs_a]
    reps_b = [boot.of(r, ids) for r in runs_b]
    task = runs_a[0].task
    p, pairs = mcnemar_p(runs_a, runs_b, ids) if task == "classification" else (None, None)
    rows = []
    for metric in [m for m in reps_a[0] if m in reps_b[0]]:
        (point_a, pooled_a), (point_b, pooled_b) = pooled(reps_a, runs_a, metric), pooled(reps_b, runs_b, metric)
        rows.append({"dataset": dataset, "task": task, "a": a, "model_a": model_a, "b": b, "model_b": model_b,
                     "metric": metric, "value_a": point_a, "value_b": point_b,
                     **stats.compare(point_a, pooled_a, point_b, pooled_b, confidence),
                     "mcnemar_p": p, "n_test": len(ids), "n_seeds_a": len(runs_a), "n_seeds_b": len(runs_b),
                     "mcnemar_pairs": pairs, "resampling_unit": boot.unit(dataset)})
    near = near_dup_differences(dataset, runs_a, runs_b, ids, boot, confidence, flagged or {})
    return [{**row, **near.get(row["metric"], {})} for row in rows]


def near_dup_differences(dataset, runs_a, runs_b, ids, boot, confidence, flagged) -> dict[str, dict]:
    """metric → comparisons.csv's *_no_near_dup columns: a − b and its paired interval on the shared test rows
    without the near-duplicates of train (none where the dataset flags none)."""
    if dataset not in flagged:
        return {}
    kept = [i for i in ids if i not in flagged[dataset]]
    if not kept:
        return {}
    reps_a, reps_b = [boot.of(r, kept) for r in runs_a], [boot.of(r, kept) for r in runs_b]
    out = {}
    for metric in [m for m in reps_a[0] if m in reps_b[0]]:
        (point_a, pooled_a), (point_b, pooled_b) = pooled(reps_a, runs_a, metric), pooled(reps_b, runs_b, metric)
        low, high = stats.percentile_ci(pooled_a - pooled_b, confidence)
        out[metric] = {"difference_no_near_dup": point_a - point_b, "ci_low_no_near_dup": low,
                       "ci_high_no_near_dup": high, "near_dup_rows_dropped": len(ids) - len(kept)}
    return out


# ---- strata.csv -------------------------------------------------------------------------------------------

STRATA_SCHEMA = {"dataset": pl.String, "model": pl.String, "method": pl.String, "agreement": pl.String,
                 "n_test": pl.Int64, "metric": pl.String, "mean": pl.Float64, "n_seeds": pl.Int64}


def strata_rows(group: tuple, runs: list[Run], table: pl.DataFrame | None) -> list[dict]:
    """Test metrics per annotator-agreement level of the test sentences, mean over the group's seeds."""
    if table is None or "agreement" not in table.columns or runs[0].task != "classification":
        return []
    levels = table.select("id", "agreement")
    per_level: dict[str, list[dict]] = {}
    sizes: dict[str, int] = {}
    for run in runs:
        joined = run.predictions.join(levels, on="id", how="left")
        for (level,), part in joined.group_by("agreement", maintain_order=True):
            gold, pred, unparsed = run.arrays(part["id"].sort().to_list())
            per_level.setdefault(str(level), []).append(run.metric_fn()(gold, pred, unparsed))
            sizes[str(level)] = part.height
    dataset, model, method = group
    return [{"dataset": dataset, "model": model, "method": method, "agreement": level, "n_test": sizes[level],
             "metric": metric, "mean": float(np.mean([m[metric] for m in seeds])), "n_seeds": len(seeds)}
            for level, seeds in sorted(per_level.items()) for metric in seeds[0]]


# ---- the rule ---------------------------------------------------------------------------------------------

def aggregate_runs(metrics_paths, predictions_paths, runs_csv, summary_csv, comparisons_csv, strata_csv=None,
                   tables: dict | None = None, comparisons=(), bootstrap_samples: int = 2000,
                   confidence: float = 0.95, clusters: dict | None = None) -> None:
    """`tables`: dataset → its table.parquet (for the agreement strata, the clusters and the near-duplicates of
    train in test); `clusters`: dataset → its config key `cluster` (group, duplicates or None: resample rows)."""
    runs = with_generated_runs([load_run(m, p) for m, p in zip(metrics_paths, predictions_paths)])
    loaded = {d: pl.read_parquet(path) for d, path in (tables or {}).items()}
    units = {d: how for d, how in (clusters or {}).items() if how}
    for d in units:
        if d not in loaded:
            raise ValueError(f"dataset '{d}' declares cluster '{units[d]}', but no table.parquet was given")
    boot = Bootstrap(bootstrap_samples, {d: bootstrap_clusters(loaded[d], how, f"dataset '{d}'")
                                         for d, how in units.items()}, units)
    flagged = flagged_test_ids(loaded)
    groups = groups_of(runs)
    summary = []
    for group, members in groups.items():
        near = near_dup_summary(group, members, boot, flagged, confidence)
        summary += [{**row, **near.get(row["metric"], {})}
                    for row in summary_rows(group, members, boot, confidence)]
    compared = []
    datasets = list(dict.fromkeys(r.dataset for r in runs))
    for a, b in comparisons:
        for dataset in datasets:
            for model_a, model_b in model_pairs(groups, dataset, a, b):
                if (a, model_a) == (b, model_b):
                    continue
                compared += comparison_rows(dataset, ((a, model_a), (b, model_b)),
                                            groups[dataset, model_a, a], groups[dataset, model_b, b],
                                            boot, confidence, flagged)
    files.write_csv(runs_csv, runs_table(runs, {r.name: near_dup_facts(r, boot, flagged) for r in runs}))
    files.write_csv(summary_csv, pl.DataFrame(summary, schema=SUMMARY_SCHEMA))
    files.write_csv(comparisons_csv, pl.DataFrame(compared, schema=COMPARISON_SCHEMA))
    if strata_csv is not None:
        strata = [row for group, members in groups.items()
                  for row in strata_rows(group, members, loaded.get(group[0]))]
        files.write_csv(strata_csv, pl.DataFrame(strata, schema=STRATA_SCHEMA))
    print(f"aggregated {len(runs)} runs in {len(groups)} groups; {len(compared)} comparison rows"
          + "".join(f"; {d}: {len(ids)} test rows near-duplicates of train" for d, ids in flagged.items()))
