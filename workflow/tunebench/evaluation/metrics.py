"""Test-set metrics from scikit-learn and scipy (nothing hand-rolled where a library has it)."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn import metrics as skm

CLASSIFICATION_METRICS = ["accuracy", "macro_f1", "weighted_f1", "mcc"]
REGRESSION_METRICS = ["mse", "rmse", "mae", "r2", "pearson", "cosine"]
LOWER_IS_BETTER = {"mse", "rmse", "mae", "unparseable_rate"}


def classification_scalars(gold, pred, labels) -> dict[str, float]:
    """Scalar metrics; predictions outside `labels` (e.g. unparsed answers) count as wrong."""
    gold, pred = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    return {
        "accuracy": float(np.mean(gold == pred)),
        "macro_f1": float(skm.f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(gold, pred, labels=labels, average="weighted", zero_division=0)),
        "mcc": float(skm.matthews_corrcoef(gold, pred)),
    }


def regression_scalars(gold, pred) -> dict[str, float]:
    gold, pred = np.asarray(gold, dtype=float), np.asarray(pred, dtype=float)
    mse = float(skm.mean_squared_error(gold, pred))
    # Exactly constant (np.std of a constant float array can be 1e-17, and scipy then returns NaN).
    constant = bool(np.all(pred == pred[0]) or np.all(gold == gold[0]))
    norm = np.linalg.norm(gold) * np.linalg.norm(pred)
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(skm.mean_absolute_error(gold, pred)),
        "r2": float(skm.r2_score(gold, pred)),
        # Pearson r is undefined for a constant prediction (e.g. the train mean): report 0, not NaN.
        "pearson": 0.0 if constant else float(stats.pearsonr(gold, pred).statistic),
        # SemEval-2017 Task 5's official score: cosine similarity of the gold and predicted score vectors.
        "cosine": 0.0 if norm == 0 else float(np.dot(gold, pred) / norm),
    }


def scalars(task: str, gold, pred, labels=None) -> dict[str, float]:
    if task == "classification":
        return classification_scalars(gold, pred, labels)
    return regression_scalars(gold, pred)


def classification_details(gold, pred, labels) -> dict:
    """Per-class precision/recall/F1/support and the confusion matrix (rows gold, columns predicted)."""
    p, r, f, s = skm.precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    return {
        "per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                            "support": int(s[i])} for i, lab in enumerate(labels)},
        "confusion_matrix": {"labels": list(labels),
                             "matrix": skm.confusion_matrix(gold, pred, labels=labels).tolist()},
    }


# A run "collapsed" when it answers one class for nearly every row although the gold data is not that lopsided:
# its metrics then measure the prompt's (or the optimiser's) bias, not the method. Flagged in the report.
COLLAPSE_TOP_SHARE = 0.9
COLLAPSE_GOLD_SHARE = 0.7


def prediction_spread(gold, pred) -> dict:
    """How spread the predictions are: the most predicted class, its share of the rows and of the gold labels,
    the entropy of the predicted classes (bits; log2 of the class count when uniform, 0 for one class), and
    `collapsed`: that class predicted for >= 90% of the rows while gold has < 70% of it."""
    gold, pred = np.asarray(gold, dtype=object), np.asarray(pred, dtype=object)
    classes, counts = np.unique(pred.astype(str), return_counts=True)
    top = classes[counts.argmax()]
    shares = counts / counts.sum()
    top_share, gold_share = float(shares.max()), float(np.mean(gold.astype(str) == top))
    return {"top_class": str(top), "top_class_share": top_share, "top_class_gold_share": gold_share,
            "prediction_entropy": float(-(shares * np.log2(shares)).sum()) + 0.0,
            "collapsed": top_share >= COLLAPSE_TOP_SHARE and gold_share < COLLAPSE_GOLD_SHARE}


def primary_direction(metric: str) -> int:
    """+1 if larger is better, -1 otherwise."""
    return -1 if metric in LOWER_IS_BETTER else 1
