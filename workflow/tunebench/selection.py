"""Choosing a setting on dev: the whole selection protocol, as data flowing one way.

Every tuned knob — a learning rate, a head's C, a TF-IDF or dictionary ridge α, a learned dictionary's L2 — is
searched the same way:
  - on a log grid that grows by one point past its edge while the dev choice sits on that edge (at most
    `grid_extensions` times; the trace says when that bound was hit), so no comparator is left under-tuned
    because its grid stopped too early;
  - by the mean dev metric over `select_seeds` seeds where a seed changes the result (trained strategies), with a
    tie rule toward the more stable value: among the values within one standard error of the best mean, the one
    whose seeds disagree least (a single lucky seed does not decide), a grid edge only where the best mean is;
  - optionally by successive halving (`successive_halving`): every value trains a fraction of the budget on
    every selection seed, the better half goes on to twice the budget, and so on; the survivors run full length.
The caller gives `score(value, seed, fraction) -> dev metric` (fraction 1: the run's own recipe); the search
trains nothing, reads no file and knows no strategy. The returned trace is what every run records and the report shows.

For a learning rate the data flows one way: rule tune_<family> runs the search (`learning_rate_search`: its
settings from the method's config, the seeds from the rule) with the strategy's trials as `score`, keeps the
winning full-length trials (`keep_chosen_trials`: trial reuse) and writes the trace; each run then gets the
chosen settings from that trace (`apply_choice`) as data on its RunSpec (`chosen`, never a rewritten method
config), before its strategy runs.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tunebench.spec import RunSpec

DEFAULT_STEP = math.sqrt(10.0)   # the grid's step when it has a single point to grow from


@dataclass
class Search:
    """The protocol's settings for one knob."""

    grid: list[float]
    greater: bool = True               # is a larger dev metric better
    seeds: list[int] = field(default_factory=lambda: [0])
    max_extensions: int = 3
    tie: str = "stable"                # "stable": toward the value whose seeds disagree least; "first": grid order
    prefer: str = "low"                # grid order for "first" ties and for listing: "low" or "high" values first
    halving: bool = False
    halving_eta: int = 2
    halving_min_fraction: float = 0.25
    final_fraction: float = 1.0        # the length of the last rung's trials (a method's trial_fraction)


def rungs(search: Search) -> list[float]:
    """Budget fractions of the successive-halving rungs, the last the full trial (e.g. 0.25, 0.5, 1)."""
    if not search.halving:
        return [search.final_fraction]
    out, fraction = [search.final_fraction], search.final_fraction / search.halving_eta
    while fraction >= search.halving_min_fraction * (1 - 1e-9):
        out.append(fraction)
        fraction /= search.halving_eta
    return sorted(out)


def better(a: float, b: float, greater: bool) -> bool:
    return a > b if greater else a < b


def pick(scores: dict[float, list[float]], search: Search, edges: tuple[float, float] | None = None) -> float:
    """The value chosen from {value: dev metric per seed}: the best mean; with `tie: stable`, among the values
    whose mean is within one standard error (over seeds) of the best, the one with the smallest spread over
    seeds — but not a value on the grid's `edges` (default: the lowest and highest scored) unless the best
    mean is itself there: a choice on an edge asks what lies past it, and the stabler value at the edge of a
    learning-rate grid is the signature of a model that learned little (it agrees with itself). Non-finite
    scores (a diverged trial) never win."""
    order = sorted(scores, reverse=search.prefer == "high")
    means = {v: float(np.mean(s)) if all(math.isfinite(x) for x in s) else math.nan for v, s in scores.items()}
    finite = [v for v in order if math.isfinite(means[v])]
    if not finite:
        return order[0]
    best = finite[0]
    for v in finite[1:]:
        if better(means[v], means[best], search.greater):
            best = v
    if search.tie != "stable" or len(scores[best]) < 2:
        return best
    se = float(np.std(scores[best], ddof=1) / math.sqrt(len(scores[best])))
    low, high = edges if edges is not None else (min(scores), max(scores))
    close = [v for v in finite if abs(means[v] - means[best]) <= se and (v == best or v not in (low, high))]
    return min(close, key=lambda v: (float(np.std(scores[v], ddof=1)), close.index(v)))


def next_point(tried: list[float], chosen: float) -> float | None:
    """One grid point past the edge the choice sits on (None when it sits inside), continuing the grid's own
    pattern: a grid of 1-3-10 values goes on 1-3-10 (3e-3, 1e-2, 3e-2 → 1e-3 below, 1e-1 above; 1e-4, 3e-4 →
    1e-3); any other grid steps by the ratio between the second and third points from that edge (a two-point
    grid repeats its ratio, a single point uses √10)."""
    values = sorted(v for v in tried if v > 0)   # a zero penalty has no place on a log scale
    if chosen <= 0 or chosen not in (values[0], values[-1]):
        return None
    # A 1-3-10 grid (values 1·10^k and 3·10^k, both present) goes on 1-3-10, whatever its spacing.
    if all(_on_one_three(v) for v in values) and any(_on_one_three(v / 3) for v in values):
        return _one_three_neighbour(chosen, up=chosen == values[-1])
    inward = values if chosen == values[0] else values[::-1]
    if len(inward) >= 3:
        step = inward[2] / inward[1]
    elif len(inward) == 2:
        step = inward[1] / inward[0]
    else:
        step = DEFAULT_STEP if chosen == values[0] else 1 / DEFAULT_STEP
    return float(f"{chosen / step:.6g}")


ONE_THREE = [m * 10.0 ** e for e in range(-12, 13) for m in (1, 3)]


def _on_one_three(value: float) -> bool:
    return any(math.isclose(value, v, rel_tol=1e-6) for v in ONE_THREE)


def _one_three_neighbour(value: float, up: bool) -> float:
    """The next value of the 1-3-10 sequence above (or below) `value`."""
    if up:
        return float(f"{min(v for v in ONE_THREE if v > value * (1 + 1e-6)):.6g}")
    return float(f"{max(v for v in ONE_THREE if v < value * (1 - 1e-6)):.6g}")


def search_grid(search: Search, score: Callable[[float, int, float], float], log=print) -> dict:
    """Run the protocol; returns the trace (see module docstring). `score(value, seed, fraction)`."""
    trace_rungs = []
    survivors = sorted(search.grid)
    fractions = rungs(search)
    for fraction in fractions[:-1]:   # successive halving: short trials, the better half goes on
        scores = {v: [score(v, s, fraction) for s in search.seeds] for v in survivors}
        keep = math.ceil(len(survivors) / search.halving_eta)
        ranked = _ranked(scores, search)
        trace_rungs.append({"fraction": fraction, "dev_by_value": _readable(scores), "kept": sorted(ranked[:keep])})
        log(f"halving rung {fraction:g}: kept {', '.join(f'{v:g}' for v in sorted(ranked[:keep]))}")
        survivors = sorted(ranked[:keep])
    final = fractions[-1]
    eliminated = sorted(set(search.grid) - set(survivors))   # by a shorter rung: worse there, so "inside"
    scores = {}
    for v in survivors:
        scores[v] = [score(v, s, final) for s in search.seeds]
        log(f"value {v:g}: dev {_mean_text(scores[v])}")
    extensions, bound_hit = 0, False
    while True:
        tried = sorted(set(scores) | set(eliminated))
        chosen = pick(scores, search, edges=(tried[0], tried[-1]))
        # A one-value grid is a fixed setting, not a search: it does not grow; nor does a choice that only ties
        # its inward neighbour (a plateau: nothing says the metric improves further out).
        point = next_point(tried, chosen) if len(search.grid) > 1 and _improves(scores, chosen, search) else None
        if point is None:
            break
        if extensions >= search.max_extensions:
            bound_hit = True
            break
        scores[point] = [score(point, s, final) for s in search.seeds]
        extensions += 1
        log(f"value {point:g} (grid extended past the edge): dev {_mean_text(scores[point])}")
    means = {v: float(np.mean(s)) for v, s in scores.items()}
    tried = sorted(set(scores) | set(eliminated))
    return {"grid": tried, "declared_grid": sorted(search.grid), "chosen": chosen,
            "dev_by_value": {f"{v:g}": means[v] for v in sorted(scores)},
            "dev_by_value_and_seed": {f"{v:g}": dict(zip(map(str, search.seeds), scores[v])) for v in sorted(scores)},
            "seeds": list(search.seeds), "extensions": extensions, "extension_bound_hit": bound_hit,
            # On an edge that still improves: the grid would have grown but its bound was hit. An edge choice
            # that only ties its neighbour sits on a plateau: a wider grid has no reason to do better.
            "on_edge": bound_hit,
            "plateau": len(tried) > 1 and chosen in (tried[0], tried[-1]) and not bound_hit,
            "halving_rounds": trace_rungs, "final_fraction": final}


def _improves(scores: dict[float, list[float]], chosen: float, search: Search) -> bool:
    """Is the edge choice strictly better on dev than its neighbour inside the grid?"""
    values = sorted(scores)
    if len(values) < 2:   # its neighbours fell out in a shorter halving rung
        return True
    neighbour = values[1] if chosen == values[0] else values[-2]
    return better(float(np.mean(scores[chosen])), float(np.mean(scores[neighbour])), search.greater)


def _ranked(scores: dict[float, list[float]], search: Search) -> list[float]:
    """Values best first by mean dev metric (non-finite last)."""
    def key(v):
        m = float(np.mean(scores[v]))
        return (not math.isfinite(m), -m if search.greater else m)
    return sorted(scores, key=key)


def _readable(scores: dict[float, list[float]]) -> dict[str, float]:
    return {f"{v:g}": float(np.mean(s)) for v, s in sorted(scores.items())}


def _mean_text(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} (seeds: {', '.join(f'{x:.4f}' for x in values)})"


# --- learning rates: from the method's config to the chosen settings of its runs -----------------------------

TRAINED = "trained"   # a full-length trial's folder of what its run can reuse; kept trials go to trained/seed<N>


def selection_seeds(spec: RunSpec) -> list[int]:
    """The seeds every rate is tried on: the first `select_seeds` of the method's seeds (the rule passes them;
    a run that selects for itself has only its own)."""
    seeds = spec.extra.get("seeds") or [spec.seed]
    return sorted(seeds)[:spec.method_cfg.get("select_seeds", 1)]


def learning_rate_search(spec: RunSpec, greater: bool) -> Search:
    """The protocol's settings for a method's `learning_rate_grid` (ties toward the stabler rate)."""
    cfg = spec.method_cfg
    return Search(grid=list(cfg["learning_rate_grid"]), greater=greater, seeds=selection_seeds(spec),
                  max_extensions=cfg.get("grid_extensions", 0), tie="stable",
                  halving=cfg.get("successive_halving", False), halving_eta=cfg.get("halving_eta", 2),
                  halving_min_fraction=cfg.get("halving_min_fraction", 0.25), final_fraction=cfg["trial_fraction"])


def keep_trial(kept: Path, value: float, seed: int, trial_dir: Path) -> None:
    """After a trial: what a full-length one left for its run (trial_dir/trained) is kept as
    kept/lr<value>/seed<N> until the choice is made; the trial's folder goes."""
    if (trial_dir / TRAINED).exists():
        target = kept / f"lr{value:g}" / f"seed{seed}"
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(trial_dir / TRAINED, target)
    shutil.rmtree(trial_dir, ignore_errors=True)


def keep_chosen_trials(kept: Path, chosen: float) -> list[int]:
    """Of the full-length trials kept as kept/lr<rate>/seed<N>, keep the chosen rate's as kept/seed<N> and drop
    the others; returns the seeds whose run can reuse its trial."""
    winner = kept / f"lr{chosen:g}"
    seeds = []
    if winner.exists():
        for folder in sorted(winner.iterdir()):
            shutil.move(folder, kept / folder.name)
            seeds.append(int(folder.name.removeprefix("seed")))
    for folder in kept.glob("lr*") if kept.exists() else []:
        shutil.rmtree(folder, ignore_errors=True)
    return seeds


def apply_choice(spec: RunSpec, trace: dict, trained: str | Path | None) -> RunSpec:
    """The run at the learning rate `trace` chose, with the trace to record. A seed whose full-length trial won
    evaluates that trial's trained model (trained/seed<N>) instead of training the same model again."""
    mine = Path(trained) / f"seed{spec.seed}" if trained else None
    reuse = (spec.seed in (trace.get("reusable_by_seeds") or []) and mine is not None
             and (mine / "weights.safetensors").exists())
    return dataclasses.replace(spec, chosen={**spec.chosen, "learning_rate": trace["chosen"]},
                               selection_trace=trace, trained_dir=str(mine) if reuse else None)

