"""Statistics of the comparison: bootstrap CIs, paired differences, relative gains and McNemar's test.

The bootstrap resamples clusters of test examples: where a dataset has them (several companies scored on one
headline, one tweet posted with different links), examples of one cluster are not independent, and resampling
them one by one would give intervals too narrow (tests/test_stats.py shows by simulation how much); without
clusters every example is its own. A replicate draws as many clusters as there are, with replacement, and
weights each example by how often its cluster was drawn: the metric of the resample holding every drawn
cluster's examples. Every metric is computed by the vectorised functions below from the arrays and a weight
matrix with a leading batch axis (one row per resample), so 2,000 resamples of a 2,400-example test set cost
milliseconds. The point estimate is the same function without weights, and tests/test_stats.py checks both
against scikit-learn (`metrics.scalars`, what runner.py reports).

Runs on the same test ids and clusters draw the same resamples (the draws depend only on the number of clusters
and the fixed seed), which makes every difference between two methods a paired bootstrap. With several seeds
the bootstrap has two levels: each replicate draws seeds with replacement as well as clusters of test examples,
and averages the metric over the drawn seeds, so the interval holds both training randomness and test-set
sampling.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

BOOTSTRAP_SEED = 20240101  # fixed: the report is the same every time it is built from the same runs
CHUNK = 256                # resamples per vectorised batch (bounds memory on large test sets)


# ---- metrics as functions of (weighted) arrays: shape (..., n) in, shape (...) out -------------------------
# `weight` (..., n), broadcast against the arrays, counts how often each example is in a resample (0: not
# drawn); None weighs every example once.

def classification_metrics(gold, pred, n_labels: int, n_codes: int | None = None,
                           weight=None) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1, weighted-F1 and MCC from integer codes.

    gold holds label codes 0..n_labels-1; pred may also hold codes >= n_labels for answers outside the label
    list (unparsed), which count as wrong, exactly as in metrics.classification_scalars.
    """
    gold, pred = np.asarray(gold), np.asarray(pred)
    n_codes = n_codes or max(n_labels, int(pred.max(initial=0)) + 1)
    cell = gold * n_codes + pred
    if weight is not None:
        cell, weight = np.broadcast_arrays(cell, np.asarray(weight, dtype=float))
        weight = weight.ravel()
    batch, n = cell.shape[:-1], cell.shape[-1]
    cell = cell.reshape(-1, n)
    rows = cell.shape[0]
    cell = cell + (np.arange(rows) * n_labels * n_codes)[:, None]
    counts = np.bincount(cell.ravel(), weights=weight, minlength=rows * n_labels * n_codes)
    return confusion_metrics(counts.reshape(*batch, n_labels, n_codes).astype(float))


def confusion_metrics(cm) -> dict[str, np.ndarray]:
    """Metrics of confusion matrices cm[..., gold, predicted]; extra predicted columns are outside the labels.

    The zero-division conventions are scikit-learn's with zero_division=0; MCC is its multiclass formula.
    """
    n_labels = cm.shape[-2]
    total = cm.sum(axis=(-2, -1))
    tp = np.diagonal(cm[..., :n_labels], axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)                   # per gold label
    predicted = cm.sum(axis=-2)                 # per predicted code (labels first)
    f1 = _divide(2 * tp, support + predicted[..., :n_labels])
    correct = tp.sum(axis=-1)
    cov_true_pred = correct * total - (support * predicted[..., :n_labels]).sum(axis=-1)
    cov_pred = total**2 - (predicted**2).sum(axis=-1)
    cov_true = total**2 - (support**2).sum(axis=-1)
    return {
        "accuracy": _divide(correct, total),
        "macro_f1": f1.mean(axis=-1),
        "weighted_f1": _divide((f1 * support).sum(axis=-1), support.sum(axis=-1)),
        "mcc": _divide(cov_true_pred, np.sqrt(cov_true * cov_pred)),
    }


def regression_metrics(gold, pred, weight=None) -> dict[str, np.ndarray]:
    """MSE, RMSE, MAE, R², Pearson r and cosine similarity; degenerate cases as in metrics.regression_scalars.
    With weights, each is the metric of the vector in which example i appears weight[i] times."""
    gold, pred = np.asarray(gold, dtype=float), np.asarray(pred, dtype=float)
    weight = np.ones(np.broadcast_shapes(gold.shape, pred.shape)) if weight is None else weight
    gold, pred, weight = np.broadcast_arrays(gold, pred, np.asarray(weight, dtype=float))

    def total(*factors):   # sum over examples of weight × factors, without the (resamples, n) products
        return np.einsum("...i" + ",...i" * len(factors) + "->...", weight, *factors)

    count = weight.sum(axis=-1)
    err = pred - gold
    gold_dev = gold - (total(gold) / count)[..., None]
    pred_dev = pred - (total(pred) / count)[..., None]
    ss_gold, ss_pred, ss_res = total(gold_dev, gold_dev), total(pred_dev, pred_dev), total(err, err)
    mse = ss_res / count
    # scikit-learn's r2_score on a constant target: 1 for a perfect prediction, else 0.
    r2 = np.where(ss_gold > 0, 1 - _divide(ss_res, ss_gold), np.where(ss_res == 0, 1.0, 0.0))
    norms = np.sqrt(total(gold, gold)) * np.sqrt(total(pred, pred))
    # Pearson r of a constant vector is undefined: 0, as in metrics.regression_scalars. Constant means every
    # drawn example equal, compared exactly as there (a variance can be 1e-33 from rounding alone).
    drawn = weight > 0
    first = np.argmax(drawn, axis=-1)[..., None]

    def constant(x):
        return np.all(~drawn | (x == np.take_along_axis(x, first, axis=-1)), axis=-1)

    pearson = np.clip(_divide(total(gold_dev, pred_dev), np.sqrt(ss_gold * ss_pred)), -1, 1)
    return {
        "mse": mse,
        "rmse": np.sqrt(mse),
        "mae": total(np.abs(err)) / count,
        "r2": r2,
        "pearson": np.where(constant(gold) | constant(pred), 0.0, pearson),
        "cosine": _divide(total(gold, pred), norms),
    }


def mean(values, weight=None) -> np.ndarray:
    """The mean over examples (the last axis) of a resample: weighted by how often each example was drawn."""
    values = np.asarray(values, dtype=float)
    if weight is None:
        return values.mean(axis=-1)
    return np.einsum("...i,...i->...", weight, values) / np.sum(weight, axis=-1)


def _divide(num, den):
    """num / den, and 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=float), np.asarray(den, dtype=float))
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ---- the bootstrap ---------------------------------------------------------------------------------------

def resample_indices(n: int, samples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(samples, n) draws with replacement of n clusters (test examples where there are no clusters); the same
    for every run with n clusters."""
    return np.random.default_rng([seed, n]).integers(0, n, size=(samples, n))


def replicates(metric_fn, arrays, samples: int, seed: int = BOOTSTRAP_SEED, clusters=None):
    """Point estimate and bootstrap replicates of every metric `metric_fn(*arrays, weight=...)` returns.

    clusters: one label per example (None: every example is its own cluster). Each replicate draws as many
    clusters as there are, with replacement, and weighs each example by how often its cluster was drawn.
    Returns {metric: (point, replicates of shape (samples,))}.
    """
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    # Numbered 0..k-1 in the order of the labels, so two runs on the same ids and clusters draw alike.
    _, cluster = np.unique(np.arange(n) if clusters is None else np.asarray(clusters), return_inverse=True)
    k = int(cluster.max()) + 1
    point = metric_fn(*arrays)
    draws = resample_indices(k, samples, seed)
    reps = {m: np.empty(samples) for m in point}
    for start in range(0, samples, CHUNK):
        drawn = draws[start:start + CHUNK]
        rows = len(drawn)
        times = np.bincount((drawn + k * np.arange(rows)[:, None]).ravel(), minlength=rows * k).reshape(rows, k)
        for m, values in metric_fn(*arrays, weight=times[:, cluster]).items():
            reps[m][start:start + CHUNK] = values
    return {m: (float(point[m]), reps[m]) for m in point}


def pool_seeds(per_seed, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Replicates of the mean over seeds: each replicate averages seeds drawn with replacement.

    per_seed: (n_seeds, samples) replicates of one metric, all on the same example resamples. Give each
    method its own `seed`, so that two methods' seed draws are independent (their seeds are not paired).
    """
    per_seed = np.atleast_2d(per_seed)
    n_seeds, samples = per_seed.shape
    if n_seeds == 1:
        return per_seed[0]
    drawn = np.random.default_rng([seed, n_seeds]).integers(0, n_seeds, size=(samples, n_seeds))
    return per_seed[drawn, np.arange(samples)[:, None]].mean(axis=1)


def percentile_ci(reps, confidence: float) -> tuple[float, float]:
    """Percentile interval; NaN replicates (an undefined ratio) are left out."""
    reps = np.asarray(reps, dtype=float)
    if not np.isfinite(reps).any():
        return float("nan"), float("nan")
    alpha = 1 - confidence
    low, high = np.nanquantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def relative_gain(a, b):
    """Percent change of a over b, signed as Wang (2024) reports it ("+27% R², −46% MSE"); NaN if b is 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.abs(b) > 1e-12, 100 * (a - b) / np.abs(b), np.nan)


def compare(point_a: float, reps_a, point_b: float, reps_b, confidence: float) -> dict[str, float]:
    """Paired comparison of a and b from replicates on the same resamples: difference and relative gain.

    A percentage of b means something only for a b that is surely positive: over a b whose own interval
    reaches 0 or below (an R² of −0.01, the MCC of a majority vote) the gain is left undefined (NaN) rather
    than printed as "+16000%".
    """
    diff_low, diff_high = percentile_ci(np.asarray(reps_a) - np.asarray(reps_b), confidence)
    b_low, b_high = percentile_ci(reps_b, confidence)
    gain, rel_low, rel_high = float("nan"), float("nan"), float("nan")
    if b_low > 0:
        gain = float(relative_gain(point_a, point_b))
        rel_low, rel_high = percentile_ci(relative_gain(reps_a, reps_b), confidence)
    return {
        "difference": point_a - point_b, "ci_low": diff_low, "ci_high": diff_high,
        "relative_gain_pct": gain, "relative_ci_low": rel_low, "relative_ci_high": rel_high,
    }


def paired_bootstrap(metric_fn, gold, pred_a, pred_b, samples: int, confidence: float,
                     seed: int = BOOTSTRAP_SEED, clusters=None) -> dict[str, dict[str, float]]:
    """Every metric of a minus b on the same test examples, with paired-bootstrap CIs."""
    a = replicates(metric_fn, [gold, pred_a], samples, seed, clusters)
    b = replicates(metric_fn, [gold, pred_b], samples, seed, clusters)
    return {m: compare(*a[m], *b[m], confidence) for m in a}


def mcnemar_exact(correct_a, correct_b) -> float:
    """Exact McNemar test: a two-sided binomial test on the discordant pairs (1.0 if there are none)."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return 1.0
    return float(sps.binomtest(only_a, only_a + only_b, 0.5).pvalue)
