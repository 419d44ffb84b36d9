"""The one run interface every method family shares.

A strategy runs as a function `run(spec: RunSpec) -> RunOutput` (its registry entry says which, see
tunebench.families). The harness here gives it the prepared table and
settings, then scores its test predictions the same way for every family, attaches cost and provenance, and
writes `predictions.parquet` and `metrics.json` atomically (metrics.json last: it marks a finished run).
"""

from __future__ import annotations

import json
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from tunebench import __version__, families, files, provenance, selection
from tunebench.config import check_against_training_split
from tunebench.evaluation import answers, metrics
from tunebench.spec import RunOutput, RunSpec


def test_metrics(spec: RunSpec, gold: list, pred: list, generated: bool = False) -> dict:
    """Metrics of predictions against gold. A missing prediction (None: a generated answer that did not parse)
    is never dropped: for classification it counts as wrong; for regression it is charged `unparsed_penalty`
    as its absolute error. Runs that can leave answers unparsed also report the unparseable rate."""
    unparsed = sum(p is None for p in pred)
    if spec.task == "classification":
        pred = ["<unparsed>" if p is None else p for p in pred]
        result = metrics.classification_scalars(gold, pred, spec.labels)
        result.update(metrics.prediction_spread(gold, pred))
        result.update(metrics.classification_details(gold, pred, spec.labels))
    else:
        penalty = spec.method_cfg.get("unparsed_penalty", 0.0)
        pred = [g - penalty if p is None else p for g, p in zip(gold, pred)]
        result = metrics.regression_scalars(gold, pred)
    if unparsed or generated:
        result["unparseable_rate"] = unparsed / max(len(pred), 1)
    return result


def score(spec: RunSpec, out: RunOutput) -> tuple[pl.DataFrame, dict]:
    """Join predictions to gold labels and compute the test metrics (see test_metrics). A run with generated
    answers also gets their metrics under the other parse-failure rules (answers.parse_rule_metrics), and with
    `decoding: both` the generated answers' own metrics under `generate`."""
    test = spec.test_rows().select("id", pl.col(spec.target_column).alias("gold"))
    preds = out.predictions
    if preds["id"].n_unique() != preds.height:
        raise ValueError(f"{spec.method}: predictions repeat ids")
    unknown = preds.filter(~pl.col("id").is_in(test["id"].implode()))
    if unknown.height:
        raise ValueError(f"{spec.method}: predictions for ids not in the test split: {unknown['id'].head(3).to_list()}")
    joined = test.join(preds, on="id", how="inner", maintain_order="left")
    if joined.height < test.height:
        raise ValueError(f"{spec.method}: predictions cover {joined.height} of {test.height} test examples")
    gold = joined["gold"].to_list()
    generated = "unparsed" in preds.columns   # the predictions are parsed free answers
    result = test_metrics(spec, gold, joined["prediction"].to_list(), generated)
    if generated:   # how the other parse-failure rules would score them
        result.update(answers.parse_rule_metrics(gold, joined["prediction"].to_list(), spec.task, spec.labels))
    if "generated_prediction" in preds.columns:   # decoding both: the generated answers, scored on their own
        generated = joined["generated_prediction"].to_list()
        result["generate"] = {**test_metrics(spec, gold, generated, True),
                              **answers.parse_rule_metrics(gold, generated, spec.task, spec.labels)}
    result.update(out.extra_metrics)
    result["n_test"] = joined.height
    return joined, result


def execute(spec: RunSpec, predictions_path, metrics_path) -> dict:
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    check_against_training_split(spec.method, spec.method_cfg, spec.dataset,
                                 spec.split("train")[spec.target_column].to_list())
    family = families.family_of(spec.strategy)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    out = families.strategy(spec.strategy).load("run")(with_chosen_settings(spec))
    if "best_dev_metric" in out.info and family.name != "baseline":
        out.info["learning_check"] = learning_check(spec, out.info)
    joined, test_metrics = score(spec, out)
    record = {
        "dataset": spec.dataset, "model": spec.model, "method": spec.method, "seed": spec.seed,
        "task": spec.task, "strategy": spec.strategy, "family": family.name,
        "metrics": test_metrics,
        "cost": {**out.info, "wall_time_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()},
        "config": {"dataset": spec.dataset_cfg, "model": spec.model_cfg, "method": spec.method_cfg},
        "data": {"table": spec.table_path, "table_sha256": files.sha256(spec.table_path)},
        "provenance": {**provenance.collect(), "tunebench_version": __version__, "threads": spec.threads,
                       "started": started.isoformat(), "ended": datetime.now(timezone.utc).isoformat()},
    }
    files.write_parquet(predictions_path, joined)
    files.write_json(metrics_path, record)
    return record


def with_chosen_settings(spec: RunSpec) -> RunSpec:
    """The run at the settings chosen on dev (tunebench.selection.apply_choice): from its selection file (rule
    tune_<family>, or the one of the method `learning_rate_from` names); a run with a grid and no selection file
    (outside the workflow) runs the selection first, as the rule would. Unchanged for a method with no grid."""
    cfg = spec.method_cfg
    lender = cfg.get("learning_rate_from")
    if not families.strategy(spec.strategy).trains or not (cfg.get("learning_rate_grid") or lender):
        return spec
    if lender and not spec.selection_path:
        raise ValueError(f"method '{spec.method}' trains at the learning rate '{lender}' chose on dev: its "
                         f"selection file is needed (rule tune_<family> of '{lender}')")
    if not spec.selection_path:
        trace = families.strategy(spec.strategy).load("select")(spec)
        return selection.apply_choice(spec, trace, spec.run_dir / selection.TRAINED)
    trace = json.loads(Path(spec.selection_path).read_text())
    if lender:   # chosen by another method's trials: nothing of them is this run
        trace = {**trace, "from_method": lender, "reusable_by_seeds": []}
    return selection.apply_choice(spec, trace, spec.trained_dir)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def select(spec: RunSpec, trained_out: Path | None = None) -> dict:
    """The learning-rate selection of a trained method (its family module's `select`), with when it ran. The
    chosen full-length trials' trained models go to `trained_out` (a folder of seed<N> folders, left empty when
    there is none)."""
    import shutil

    started = datetime.now(timezone.utc)
    check_against_training_split(spec.method, spec.method_cfg, spec.dataset,
                                 spec.split("train")[spec.target_column].to_list())
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    trace = families.strategy(spec.strategy).load("select")(spec)
    if trained_out is not None:
        shutil.rmtree(trained_out, ignore_errors=True)
        if (spec.run_dir / selection.TRAINED).exists():
            shutil.move(spec.run_dir / selection.TRAINED, trained_out)
        Path(trained_out).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(spec.run_dir, ignore_errors=True)
    return {**trace, "started": started.isoformat(), "ended": datetime.now(timezone.utc).isoformat()}


def trivial_dev_metric(spec: RunSpec, metric: str) -> float:
    """The dev metric of the trivial baseline: always the majority training class, or the training mean."""
    train, dev = spec.split("train")[spec.target_column], spec.split("dev")[spec.target_column]
    if spec.task == "classification":
        majority = train.mode().sort()[0]
        return metrics.classification_scalars(dev.to_list(), [majority] * dev.len(), spec.labels)[metric]
    return metrics.regression_scalars(dev.to_list(), [float(train.mean())] * dev.len())[metric]


def learning_check(spec: RunSpec, info: dict) -> dict:
    """Did the run learn? Its dev metric against the trivial baseline's, and its training loss first vs last.
    A run that did not beat the trivial baseline on dev is marked in the report (with the likely reason)
    instead of being ranked as if it were a fair attempt."""
    metric, value = info["dev_metric"], info["best_dev_metric"]
    trivial = trivial_dev_metric(spec, metric)
    lower_better = metrics.primary_direction(metric) < 0
    beats = value is not None and (value < trivial if lower_better else value > trivial)
    losses = info.get("train_losses") or []
    flat = len(losses) >= 2 and losses[-1] > 0.95 * losses[0]
    reasons = []
    if not beats:
        reasons.append(f"dev {metric} {value:.3f} not better than the trivial baseline's {trivial:.3f}")
    if flat:
        reasons.append(f"training loss flat ({losses[0]:.3f} → {losses[-1]:.3f}): learning rate too small, or "
                       f"too few steps?")
    return {"dev_metric": metric, "dev_value": value, "trivial_dev_value": trivial, "beats_trivial": beats,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "loss_flat": flat, "learned": beats and not flat, "reason": "; ".join(reasons) or None}
