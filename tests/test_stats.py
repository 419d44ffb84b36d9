"""Metrics against hand-computed values, bootstrap coverage on simulated data, paired comparisons, McNemar."""

from __future__ import annotations

import numpy as np
import pytest

from tunebench.evaluation import metrics, stats

LABELS = ["a", "b", "c"]


def codes(values, labels=LABELS):
    return np.array([labels.index(v) if v in labels else len(labels) for v in values])


def three_classes(gold, pred, weight=None):
    return stats.classification_metrics(gold, pred, 3, weight=weight)


def test_classification_metrics_match_hand_computed_values():
    gold = ["a", "a", "b", "b", "c", "c"]
    pred = ["a", "b", "b", "b", "c", "a"]
    # per class F1: a 0.5 (P 1/2, R 1/2), b 0.8 (P 2/3, R 1), c 2/3 (P 1, R 1/2); supports are equal.
    # MCC: C = [[1,1,0],[0,2,0],[1,0,1]], t = (2,2,2), p = (2,3,1): (4·6 − 12) / sqrt((36 − 12)(36 − 14)).
    expected = {"accuracy": 4 / 6, "macro_f1": (0.5 + 0.8 + 2 / 3) / 3, "weighted_f1": (0.5 + 0.8 + 2 / 3) / 3,
                "mcc": 12 / np.sqrt(24 * 22)}
    reference = metrics.classification_scalars(gold, pred, LABELS)
    vectorised = stats.classification_metrics(codes(gold), codes(pred), 3)
    for name, value in expected.items():
        assert reference[name] == pytest.approx(value, abs=1e-12)
        assert float(vectorised[name]) == pytest.approx(value, abs=1e-12)


def test_regression_metrics_match_hand_computed_values():
    gold, pred = [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 2.0, 5.0]
    expected = {"mse": 0.5, "rmse": np.sqrt(0.5), "mae": 0.5, "r2": 1 - 2 / 5,
                "pearson": 6 / np.sqrt(5 * 9), "cosine": 31 / np.sqrt(30 * 34)}
    reference = metrics.regression_scalars(gold, pred)
    vectorised = stats.regression_metrics(np.array(gold), np.array(pred))
    for name, value in expected.items():
        assert reference[name] == pytest.approx(value, abs=1e-12)
        assert float(vectorised[name]) == pytest.approx(value, abs=1e-12)


def test_vectorised_metrics_equal_scikit_learn_on_random_and_degenerate_inputs():
    rng = np.random.default_rng(0)
    names = np.array(LABELS + ["<unparsed>", "other"], dtype=object)
    for trial in range(60):
        n = int(rng.integers(2, 40))
        gold = rng.integers(0, 3, n)
        # Some trials predict outside the labels (unparsed answers), some predict one class only.
        pred = np.where(rng.random(n) < 0.5, gold, rng.integers(0, 5 if trial % 2 else 3, n))
        if trial % 7 == 0:
            pred = np.full(n, 1)
        reference = metrics.classification_scalars(names[gold], names[pred], LABELS)
        vectorised = stats.classification_metrics(gold, pred, 3)
        for name in reference:
            assert float(vectorised[name]) == pytest.approx(reference[name], abs=1e-12), (trial, name)
    for trial in range(60):
        n = int(rng.integers(3, 40))
        gold = rng.normal(size=n)
        pred = np.full(n, 0.3) if trial % 5 == 0 else gold + rng.normal(size=n)
        reference = metrics.regression_scalars(gold, pred)
        vectorised = stats.regression_metrics(gold, pred)
        for name in reference:
            assert float(vectorised[name]) == pytest.approx(reference[name], abs=1e-9), (trial, name)


def test_replicates_are_the_metric_on_resampled_examples():
    rng = np.random.default_rng(1)
    gold, pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    fn = three_classes
    reps = stats.replicates(fn, [gold, pred], samples=20, seed=7)
    index = stats.resample_indices(50, 20, seed=7)
    names = np.array(LABELS, dtype=object)
    for b in (0, 13):
        expected = metrics.classification_scalars(names[gold[index[b]]], names[pred[index[b]]], LABELS)
        assert reps["macro_f1"][1][b] == pytest.approx(expected["macro_f1"], abs=1e-12)
    assert reps["accuracy"][0] == pytest.approx(np.mean(gold == pred))
    again = stats.replicates(fn, [gold, pred], samples=20, seed=7)
    assert np.array_equal(again["mcc"][1], reps["mcc"][1])  # fixed seed: a deterministic report


def test_weighted_metrics_are_the_metrics_of_the_repeated_examples():
    """A weight is how often an example sits in a resample: the metrics of the arrays with each example
    repeated weight times, degenerate draws (one class, a constant target among the drawn) included."""
    rng = np.random.default_rng(11)
    for trial in range(40):
        n = int(rng.integers(2, 30))
        weight = rng.integers(0, 3, n) * (rng.random(n) < (0.2 if trial % 5 == 0 else 0.9))
        weight[rng.integers(n)] += 1
        repeat = np.repeat(np.arange(n), weight)
        gold = rng.integers(0, 3, n)
        pred = np.where(rng.random(n) < 0.6, gold, rng.integers(0, 4, n))
        weighted, repeated = three_classes(gold, pred, weight), three_classes(gold[repeat], pred[repeat])
        for name in repeated:
            assert float(weighted[name]) == pytest.approx(float(repeated[name]), abs=1e-12), (trial, name)
        target = np.where(rng.random(n) < 0.3, 0.5, rng.normal(size=n))
        guess = np.full(n, 0.2) if trial % 4 == 0 else target + rng.normal(size=n)
        weighted = stats.regression_metrics(target, guess, weight)
        repeated = stats.regression_metrics(target[repeat], guess[repeat])
        for name in repeated:
            assert float(weighted[name]) == pytest.approx(float(repeated[name]), abs=1e-9), (trial, name)


def weights_of(weight=None, n=9):
    """A 'metric' that reports each example's weight in the resample."""
    weight = np.ones(n) if weight is None else weight
    return {f"w{i}": weight[..., i] for i in range(n)}


def test_cluster_replicates_draw_whole_clusters():
    clusters = np.array(["b", "b", "b", "a", "a", "c", "c", "c", "c"])
    reps = stats.replicates(lambda x, weight=None: weights_of(weight), [np.zeros(9)], 200, clusters=clusters)
    weight = np.stack([reps[f"w{i}"][1] for i in range(9)], axis=1)        # (replicates, examples)
    for c in "abc":
        assert (weight[:, clusters == c] == weight[:, [list(clusters).index(c)]]).all()  # whole or not at all
    drawn = weight[:, [3, 0, 5]]                                            # times a, b, c were drawn
    assert (drawn.sum(axis=1) == 3).all() and (drawn == 0).any() and (drawn == 2).any()
    # Without clusters every example is one: the replicates are the resampled rows of resample_indices.
    rows = stats.replicates(lambda x, weight=None: weights_of(weight), [np.zeros(9)], 200, seed=3)
    times = np.stack([np.bincount(index, minlength=9) for index in stats.resample_indices(9, 200, seed=3)])
    assert np.array_equal(np.stack([rows[f"w{i}"][1] for i in range(9)], axis=1), times)


def coverage(simulate, truth, metric, fn, simulations=200, samples=500, confidence=0.95):
    rng = np.random.default_rng(2024)
    hits = 0
    for s in range(simulations):
        arrays = simulate(rng)
        point, reps = stats.replicates(fn, arrays, samples, seed=s)[metric]
        low, high = stats.percentile_ci(reps, confidence)
        hits += low <= truth <= high
    return hits / simulations


def test_bootstrap_ci_covers_true_accuracy_near_nominal_rate():
    n, p = 300, 0.7

    def simulate(rng):
        gold = rng.integers(0, 3, n)
        right = rng.random(n) < p
        return gold, np.where(right, gold, (gold + 1) % 3)

    rate = coverage(simulate, p, "accuracy", three_classes)
    # 200 simulations: the binomial sd of a 95% coverage estimate is 1.5 points.
    assert 0.90 <= rate <= 0.99, rate


def test_bootstrap_ci_covers_true_r2_near_nominal_rate():
    n = 300

    def simulate(rng):
        gold = rng.normal(size=n)
        return gold, gold + 0.5 * rng.normal(size=n)  # population R² = 1 − 0.25 / 1

    rate = coverage(simulate, 0.75, "r2", stats.regression_metrics)
    assert 0.90 <= rate <= 0.99, rate


@pytest.mark.parametrize("n_seeds, simulations", [(1, 200), (3, 100)])
def test_cluster_bootstrap_covers_the_true_accuracy_where_rows_are_clustered(n_seeds, simulations):
    """100 clusters of 1-7 test examples (about 400); each cluster has its own chance of being right, drawn
    from Beta(1.4, 0.6) (mean 0.7, intra-cluster correlation 1/3), so the accuracy's sd is about 1.5 times what
    independent examples would give (design effect 2.3). Resampling clusters covers the true 0.7 at about the
    nominal rate; resampling rows covers it far less often. With three seeds (each an independent draw of
    answers given the clusters) the same holds for the two-level bootstrap, whose example level must resample
    clusters too."""
    rng = np.random.default_rng(2024)
    hits = {"clusters": 0, "rows": 0}
    for s in range(simulations):
        clusters = np.repeat(np.arange(100), rng.integers(1, 8, 100))
        right = rng.beta(1.4, 0.6, 100)[clusters]
        gold = rng.integers(0, 3, len(clusters))
        preds = [np.where(rng.random(len(gold)) < right, gold, (gold + 1) % 3) for _ in range(n_seeds)]
        for unit, labels in (("clusters", clusters), ("rows", None)):
            per_seed = [stats.replicates(three_classes, [gold, pred], 400, seed=s, clusters=labels)["accuracy"][1]
                        for pred in preds]
            low, high = stats.percentile_ci(stats.pool_seeds(np.stack(per_seed), seed=s), 0.95)
            hits[unit] += low <= 0.7 <= high
    rate = {unit: n / simulations for unit, n in hits.items()}
    # 200 (100) simulations: the binomial sd of a 95% coverage estimate is 1.5 (2.2) points. Measured: clusters
    # 0.94 (three seeds 0.98), rows 0.775 (0.81).
    assert rate["clusters"] >= 0.90 and rate["rows"] <= 0.86, rate


def test_pooling_seeds_widens_the_interval_only_when_seeds_disagree():
    rng = np.random.default_rng(3)
    one = rng.normal(0.8, 0.01, 1000)
    assert np.array_equal(stats.pool_seeds(one[None, :]), one)
    same = stats.pool_seeds(np.stack([one, one, one]))
    assert np.allclose(same, one)
    spread = stats.pool_seeds(np.stack([one - 0.05, one, one + 0.05]))
    width = lambda r: np.subtract(*stats.percentile_ci(r, 0.95)[::-1])  # noqa: E731
    assert width(spread) > 2 * width(one)


def test_paired_comparison_is_antisymmetric():
    rng = np.random.default_rng(4)
    gold = rng.integers(0, 3, 200)
    pred_a = np.where(rng.random(200) < 0.8, gold, rng.integers(0, 4, 200))
    pred_b = np.where(rng.random(200) < 0.4, gold, rng.integers(0, 3, 200))
    fn = three_classes
    ab = stats.paired_bootstrap(fn, gold, pred_a, pred_b, samples=1000, confidence=0.95)
    ba = stats.paired_bootstrap(fn, gold, pred_b, pred_a, samples=1000, confidence=0.95)
    for metric in ab:
        assert ab[metric]["difference"] == pytest.approx(-ba[metric]["difference"], abs=1e-12)
        assert ab[metric]["ci_low"] == pytest.approx(-ba[metric]["ci_high"], abs=1e-12)
        assert ab[metric]["ci_high"] == pytest.approx(-ba[metric]["ci_low"], abs=1e-12)
    # about 85% vs 60% correct on 200 examples: the paired interval excludes 0.
    assert ab["accuracy"]["ci_low"] > 0


def test_paired_interval_is_narrower_than_unpaired_for_correlated_methods():
    rng = np.random.default_rng(5)
    gold = rng.normal(size=300)
    shared = rng.normal(size=300)
    pred_a, pred_b = gold + shared + 0.1 * rng.normal(size=300), gold + shared + 0.1 * rng.normal(size=300)
    paired = stats.paired_bootstrap(stats.regression_metrics, gold, pred_a, pred_b, 1000, 0.95)["mse"]
    a = stats.replicates(stats.regression_metrics, [gold, pred_a], 1000, seed=1)["mse"][1]
    b = stats.replicates(stats.regression_metrics, [gold, pred_b], 1000, seed=2)["mse"][1]
    low, high = stats.percentile_ci(a - b, 0.95)
    assert paired["ci_high"] - paired["ci_low"] < 0.5 * (high - low)


def test_relative_gain_reads_like_wang_2024():
    assert float(stats.relative_gain(0.635, 0.5)) == pytest.approx(27.0)    # +27% R²
    assert float(stats.relative_gain(0.54, 1.0)) == pytest.approx(-46.0)    # −46% MSE
    assert float(stats.relative_gain(0.1, -0.2)) == pytest.approx(150.0)    # from a negative R²: still a gain
    assert np.isnan(stats.relative_gain(0.3, 0.0))
    result = stats.compare(0.6, np.array([0.6, 0.62, 0.58]), 0.5, np.array([0.5, 0.5, 0.5]), 0.95)
    assert result["relative_gain_pct"] == pytest.approx(20.0)
    assert result["relative_ci_low"] < 20.0 < result["relative_ci_high"]
    # b's own interval reaches 0 (an R² of about 0) or lies below it: a relative gain would be a ratio to noise.
    for b in ([-0.02, 0.01, 0.03], [-0.2, -0.1, -0.15]):
        noise = stats.compare(0.6, np.array([0.6, 0.62, 0.58]), float(np.mean(b)), np.array(b), 0.95)
        assert np.isnan(noise["relative_gain_pct"]) and noise["difference"] == pytest.approx(0.6 - np.mean(b))


def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs():
    # 10 examples only a gets right, 2 only b, 20 both, 5 neither: p = 2 · P(X ≤ 2 | 12, 1/2).
    a = np.array([1] * 10 + [0] * 2 + [1] * 20 + [0] * 5, dtype=bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 20 + [0] * 5, dtype=bool)
    assert stats.mcnemar_exact(a, b) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert stats.mcnemar_exact(a, b) == stats.mcnemar_exact(b, a)
    assert stats.mcnemar_exact(a, a) == 1.0
