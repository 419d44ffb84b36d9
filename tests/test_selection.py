"""The selection protocol (tunebench.selection): grids that grow past their edge, the mean over seeds with a
stability tie rule, successive halving — on score functions whose optimum we set, and through a linear head."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tunebench import selection
from tunebench.modeling import linear_heads


def peaked(at: float, width: float = 1.0):
    """A dev metric that peaks at `at` on a log scale (the same for every seed and fraction)."""
    return lambda value, seed, fraction: -abs(math.log10(value) - math.log10(at)) / width


def test_the_grid_grows_past_its_edge_until_the_choice_is_inside():
    search = selection.Search(grid=[1e-4, 1e-3, 1e-2], max_extensions=3)
    trace = selection.search_grid(search, peaked(1e-1), log=lambda _: None)
    assert trace["grid"] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert trace["chosen"] == pytest.approx(1e-1) and trace["extensions"] == 2
    assert not trace["on_edge"] and not trace["extension_bound_hit"]
    assert trace["declared_grid"] == [1e-4, 1e-3, 1e-2]
    # A two-point 1-3 grid continues 1-3-10, not by its ratio of 3 (1e-4, 3e-4 → 1e-3, not 9e-4).
    two = selection.search_grid(selection.Search(grid=[1e-4, 3e-4], max_extensions=1), peaked(1e-2),
                                log=lambda _: None)
    assert two["grid"] == pytest.approx([1e-4, 3e-4, 1e-3]) and two["extension_bound_hit"]
    other = selection.search_grid(selection.Search(grid=[2.0, 8.0], max_extensions=1), peaked(1e3),
                                  log=lambda _: None)
    assert other["grid"] == pytest.approx([2.0, 8.0, 32.0])   # elsewhere by the grid's own ratio
    # It grows downwards too, by the grid's own step (here ×3).
    down = selection.search_grid(selection.Search(grid=[3e-3, 1e-2, 3e-2]), peaked(1e-3), log=lambda _: None)
    assert down["chosen"] == pytest.approx(1e-3, rel=0.01) and down["grid"][0] < 1e-3


def test_the_growth_bound_is_reported_when_hit():
    monotone = lambda value, seed, fraction: value    # noqa: E731 — ever larger is ever better
    trace = selection.search_grid(selection.Search(grid=[1.0, 10.0], max_extensions=3), monotone, log=lambda _: None)
    assert trace["extensions"] == 3 and trace["extension_bound_hit"] and trace["on_edge"]
    assert trace["chosen"] == pytest.approx(1e4)
    fixed = selection.search_grid(selection.Search(grid=[5.0], max_extensions=3), monotone, log=lambda _: None)
    assert fixed["grid"] == [5.0] and fixed["extensions"] == 0   # one value is a setting, not a search


def test_the_choice_rests_on_the_mean_over_seeds_and_prefers_the_stable_value():
    """Rate a: seeds 0.43 and 0.67 (mean 0.55, one lucky seed); rate b: 0.53 and 0.55 (mean 0.54). b is within
    one standard error of a's mean and its seeds agree: b is chosen. With one seed, a's lucky 0.67 would win."""
    table = {(1e-3, 0): 0.43, (1e-3, 1): 0.67, (3e-3, 0): 0.53, (3e-3, 1): 0.55, (1e-2, 0): 0.2, (1e-2, 1): 0.2,
             (3e-4, 0): 0.1, (3e-4, 1): 0.1}
    score = lambda value, seed, fraction: table[(float(f"{value:.6g}"), seed)]   # noqa: E731
    grid = [3e-4, 1e-3, 3e-3, 1e-2]
    two = selection.search_grid(selection.Search(grid=grid, seeds=[0, 1]), score, log=lambda _: None)
    assert two["chosen"] == 3e-3 and two["dev_by_value_and_seed"]["0.001"] == {"0": 0.43, "1": 0.67}
    assert two["dev_by_value"]["0.001"] == pytest.approx(0.55) and two["seeds"] == [0, 1]
    one = selection.search_grid(selection.Search(grid=grid, seeds=[1]), score, log=lambda _: None)
    assert one["chosen"] == 1e-3
    plain = selection.search_grid(selection.Search(grid=grid, seeds=[0, 1], tie="first"), score, log=lambda _: None)
    assert plain["chosen"] == 1e-3   # without the tie rule the best mean wins however its seeds disagree


def test_the_stable_tie_does_not_move_the_choice_onto_a_grid_edge():
    """The kept study's TFNS full fine-tuning (7d5716b): 1e-4 scored 0.43/0.50, 3e-4 0.68/0.41, 1e-3 0.50/0.26.
    1e-4 is within one standard error of 3e-4's best mean and its seeds agree more, but it is the grid's edge,
    where the stabler rate is the one that learned less, and a tie is no reason to grow the grid: the best mean
    is kept. The same tie inside the grid still goes to the stabler value."""
    table = {1e-4: (0.434, 0.498), 3e-4: (0.683, 0.414), 1e-3: (0.497, 0.262)}
    score = lambda value, seed, fraction: table[float(f"{value:.6g}")][seed]   # noqa: E731
    trace = selection.search_grid(selection.Search(grid=sorted(table), seeds=[0, 1], max_extensions=3), score,
                                  log=lambda _: None)
    assert trace["chosen"] == 3e-4 and trace["extensions"] == 0 and not trace["on_edge"]
    inside = {1e-5: (0.1, 0.1), **table}
    score = lambda value, seed, fraction: inside[float(f"{value:.6g}")][seed]   # noqa: E731
    trace = selection.search_grid(selection.Search(grid=sorted(inside), seeds=[0, 1], max_extensions=3), score,
                                  log=lambda _: None)
    assert trace["chosen"] == 1e-4   # inside the grid now: the stable tie applies
    assert selection.pick({1.0: [0.5, 0.5], 2.0: [0.6, 0.4]}, selection.Search(grid=[1.0, 2.0])) == 1.0   # best is on the edge


def test_successive_halving_trains_the_better_half_longer():
    calls = []

    def score(value, seed, fraction):
        calls.append((value, seed, fraction))
        return peaked(1e-3)(value, seed, fraction)

    search = selection.Search(grid=[1e-5, 1e-4, 1e-3, 1e-2], seeds=[0, 1], halving=True, max_extensions=0)
    trace = selection.search_grid(search, score, log=lambda _: None)
    by_fraction = {f: sorted({v for v, _, g in calls if g == f}) for f in (0.25, 0.5, 1.0)}
    assert by_fraction == {0.25: [1e-5, 1e-4, 1e-3, 1e-2], 0.5: [1e-4, 1e-3], 1.0: [1e-3]}
    assert len(calls) == 2 * (4 + 2 + 1)
    assert trace["chosen"] == 1e-3 and [r["fraction"] for r in trace["halving_rounds"]] == [0.25, 0.5]
    assert trace["halving_rounds"][0]["kept"] == [1e-4, 1e-3]
    assert selection.rungs(selection.Search(grid=[1.0], halving=True, halving_eta=3, halving_min_fraction=0.1)) \
        == pytest.approx([1 / 9, 1 / 3, 1.0])


def test_a_diverged_value_never_wins():
    score = lambda value, seed, fraction: math.nan if value > 1e-2 else value   # noqa: E731
    trace = selection.search_grid(selection.Search(grid=[1e-3, 1e-2, 1e-1], max_extensions=0), score,
                                  log=lambda _: None)
    assert trace["chosen"] == 1e-2


def test_a_linear_heads_penalty_grid_grows_until_the_choice_is_inside():
    """Logistic regression on one informative feature: the declared grid [1e-4, 1e-3] regularises it nearly
    into answering the majority class (1e-3 only begins to beat 1e-4); the grid grows until the choice is
    inside, where C lets the feature speak. A grid whose values all tie (a plateau) does not grow."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = (y * 2.0 - 1.0 + rng.normal(0, 0.8, 400))[:, None]
    spec = type("Spec", (), {"task": "classification", "labels": ["a", "b"],
                             "method_cfg": {"C_grid": [1e-4, 1e-3], "grid_extensions": 3}})()
    model, selected, dev_score, trace = linear_heads.tune_on_dev(linear_heads.linear_knob(spec, scale=False),
                                                                 x[:300], y[:300], x[300:], y[300:], spec)
    assert trace["key"] == "C" and trace["declared_grid"] == [1e-4, 1e-3] and trace["extensions"] >= 2
    assert selected["C"] >= 1e-1 and dev_score > 0.9 and not trace["on_edge"]
    assert trace["dev_by_value"]["0.001"] < dev_score
    spec.method_cfg["C_grid"] = [1e-6, 1e-5]   # both answer the majority class: a plateau, not a trend
    *_, flat = linear_heads.tune_on_dev(linear_heads.linear_knob(spec, scale=False), x[:300], y[:300], x[300:],
                                        y[300:], spec)
    assert flat["extensions"] == 0 and flat["chosen"] == 1e-6   # the tie goes to the stronger penalty
    assert flat["plateau"] and not flat["on_edge"]


# ---- learning rates: trial reuse and the choice handed to the runs, as data ---------------------------------

def a_spec(tmp_path, seed=0, **method):
    from tunebench.spec import RunSpec

    config = {"datasets": {"d": {"task": "classification", "labels": ["a", "b"]}},
              "methods": {"x": {"strategy": "full", "learning_rate": 1e-4, "learning_rate_grid": [1e-4, 1e-3],
                                "select_seeds": 2, "trial_fraction": 1, **method}}}
    return RunSpec.from_config(config, "d", "m", "x", seed, run_dir=tmp_path / "run", extra={"seeds": [2, 0, 1]})


def full_length_trial(folder):
    (folder / selection.TRAINED).mkdir(parents=True)
    (folder / selection.TRAINED / "weights.safetensors").write_text("w")
    return folder


def test_the_winning_full_length_trials_are_kept_for_their_seeds_and_the_rest_dropped(tmp_path):
    kept = tmp_path / "kept"
    for lr in (1e-4, 1e-3):
        for seed in (0, 1):
            selection.keep_trial(kept, lr, seed, full_length_trial(tmp_path / f"trial-{lr:g}-{seed}"))
    selection.keep_trial(kept, 1e-2, 0, tmp_path / "shortened")   # a shortened trial leaves nothing
    assert not list(tmp_path.glob("trial-*"))
    assert selection.keep_chosen_trials(kept, 1e-3) == [0, 1]
    assert sorted(p.name for p in kept.iterdir()) == ["seed0", "seed1"]


def test_a_run_gets_the_choice_as_data_and_its_method_config_stays_as_configured(tmp_path):
    spec = a_spec(tmp_path)
    assert selection.selection_seeds(spec) == [0, 1]   # the first select_seeds of the method's seeds
    assert selection.learning_rate_search(spec, greater=True).grid == [1e-4, 1e-3]
    trained = tmp_path / "sel.trained"
    (trained / "seed0").mkdir(parents=True)
    (trained / "seed0" / "weights.safetensors").write_text("w")
    trace = {"chosen": 1e-3, "reusable_by_seeds": [0]}
    run = selection.apply_choice(spec, trace, trained)
    assert run.settings["learning_rate"] == 1e-3 and run.method_cfg["learning_rate"] == 1e-4
    assert run.selection_trace is trace and run.trained_dir == str(trained / "seed0")
    other = selection.apply_choice(a_spec(tmp_path, seed=1), trace, trained)
    assert other.settings["learning_rate"] == 1e-3 and other.trained_dir is None   # seed 1 trains
