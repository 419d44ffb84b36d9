"""Figures (k) and (l): two ways of running the default study compared side by side, job by job, on the current
config. (k) #15's ratio: the study on an AVX2-only CPU over the same study here. (l) what `attention: auto`
(eager kernels while training on a CPU) buys the training runs over SDPA, as the study runs them.

Figure (g)'s emulated study runs for two hours at another time than the native one, so the machine's load enters
its ratio. Here one run of each torch method of the default study (the first dataset; seed 1 where the method has
several seeds, as seed 0 of a selected method only evaluates its selection trial) is run twice at the same
moment: natively and emulating an AVX2-only CPU (hardware.AVX2_ENVIRONMENT: torch, MKL and oneDNN held to AVX2,
so `precision: auto` resolves to fp32). Each side is the study's own Snakemake job with one thread — as
profiles/default runs torch jobs, two side by side on 2 cores — in a scratch tree whose results/ link to a
finished study's (its tables, token shards, features, converted model and learning-rate selections), so only the
run itself executes. The run's recorded wall time (metrics.json) is compared; the slower side finishes alone.

The study-level figure weights each method's ratio by its share of the native study's time (runs.csv beside the
study: its runs and their selection trials, over all datasets and seeds); model-free baselines, which the
emulation does not touch, count at 1x.

(l) is the same machinery with the sides `sdpa` (the model entries' `attention` overridden to sdpa through
Snakemake's --config) and `auto` (the config as it is), over the runs that train (encoder and generative
fine-tuning); the figure is each side's summed time and their ratio, plus every run's test metric on both sides
(same mathematics, so equal up to rounding).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tunebench import config as tbconfig
from tunebench.hardware import AVX2_ENVIRONMENT

from .workflow import method_seconds
from .workloads import Context

# side → (environment, Snakemake --config override); the first side is the reference of the ratio.
AVX2_SIDES = {"native": ({}, None), "avx2": (AVX2_ENVIRONMENT, None)}
TRAINING_FAMILIES = ("encoder", "generative")
LINKED = ("Snakefile", "workflow", "config", "profiles", "envs", "data")


def attention_sides(cfg: dict) -> dict:
    """(l)'s sides: every model entry that sets `attention` overridden to sdpa (Snakemake merges a --config
    mapping into the config), and the config as it is."""
    entries = ", ".join(f"{name}: {{attention: sdpa}}" for name, entry in cfg["models"].items() if "attention" in entry)
    return {"sdpa": ({}, f"models={{{entries}}}"), "auto": ({}, None)}


def representative_runs(cfg: dict) -> list[tbconfig.Run]:
    """One run of each torch method of the study: its first dataset, seed 1 if the method has it (seed 0 of a
    method with a learning-rate grid evaluates the chosen trial instead of training), else its first seed."""
    chosen: dict[str, tbconfig.Run] = {}
    for run in tbconfig.runs(cfg):
        if tbconfig.family(cfg, run.method).name == "baseline":
            continue
        first = chosen.get(run.method)
        if first is None or (run.dataset == first.dataset and first.seed != 1 and run.seed == 1):
            chosen[run.method] = run
    return list(chosen.values())


def scratch_tree(root: Path, study_dir: Path) -> Path:
    """A working folder that runs a finished study's code on its inputs: everything but results/runs is a link
    (so Snakemake finds every upstream output present, with its own times, and runs the requested run alone)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        if not (root / name).exists():
            (root / name).symlink_to((study_dir / name).resolve())
    results = root / "results"
    results.mkdir(exist_ok=True)
    for entry in (study_dir / "results").iterdir():
        if entry.name not in ("runs", "runs.csv", "summary.csv", "comparisons.csv", "strata.csv", "report.md",
                              "report.html", "readme_table.md", "figures") and not (results / entry.name).exists():
            (results / entry.name).symlink_to(entry.resolve())
    return root


def start_run(tree: Path, run: tbconfig.Run, rule: str, side: str, sides: dict) -> subprocess.Popen:
    target = f"results/runs/{run.path}/metrics.json"
    environment, override = sides[side]
    # Only the run's own rule may execute: if Snakemake wanted to rebuild an input, the figure would time that.
    with open(tree / f"{side}-{run.method}.log", "w") as log:   # the child keeps its own copy of the handle
        return subprocess.Popen([sys.executable, "-m", "snakemake", target, "--cores", "1", "--set-threads",
                                 f"{rule}=1", "--allowed-rules", rule, "--rerun-triggers", "mtime", "--configfile",
                                 "config/config.yaml", *(["--config", override] if override else [])],
                                cwd=tree, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **environment})


def run_record(tree: Path, run: tbconfig.Run) -> dict:
    """(wall seconds, test metric, attention that ran) of a finished run; Nones if it failed."""
    metrics = tree / "results" / "runs" / run.path / "metrics.json"
    if not metrics.exists():
        return {"s": None, "metric": None, "attention": None}
    record = json.loads(metrics.read_text())
    scalars = record["metrics"]
    metric = scalars.get("macro_f1", scalars.get("r2"))
    return {"s": record["cost"].get("wall_time_s"), "metric": metric, "attention": record["cost"].get("attention")}


def study_ratio(ratios: dict[str, float], seconds: dict[str, float], family_of: dict[str, str]) -> float | None:
    """The study's AVX2/native time ratio from per-method ratios weighted by the native study's seconds per
    method; baselines at 1x; a torch method without a ratio makes it unknown."""
    total = sum(seconds.values())
    if not total:
        return None
    weighted = 0.0
    for method, s in seconds.items():
        if family_of[method] == "baseline":
            weighted += s
        elif ratios.get(method) is None:
            return None
        else:
            weighted += s * ratios[method]
    return weighted / total


def measure_pairs(ctx: Context, study_dir: Path, runs: list[tbconfig.Run], sides: dict, name: str) -> dict:
    """Each run on every side at the same moment (one Snakemake job a side); per run both sides' records and the
    ratio second side / first side."""
    first, second = sides
    trees = {side: scratch_tree(ctx.tmp / name / side, study_dir) for side in sides}
    pairs = {}
    for run in runs:
        rule = tbconfig.family(ctx.cfg, run.method).rule
        processes = {side: start_run(trees[side], run, rule, side, sides) for side in sides}
        codes = {side: process.wait() for side, process in processes.items()}
        records = {side: run_record(trees[side], run) for side in sides}
        times = [records[first]["s"], records[second]["s"]]
        pairs[run.method] = {"run": run.path, **records, "exit": codes,
                             "ratio": times[1] / times[0] if all(times) else None}
        print(f"   {run.path}: {first} {times[0]} s, {second} {times[1]} s", flush=True)
    return pairs


def not_measured(ctx: Context, study_dir: Path | None, key: str) -> dict | None:
    runs_csv = study_dir / "results" / "runs.csv" if study_dir else None
    if not ctx.quick and runs_csv is not None and runs_csv.exists():
        return None
    why = "quick mode runs no study" if ctx.quick else (
        f"no finished study at {runs_csv}" if runs_csv else "give --study-dir (a finished default study)")
    return {"workload": f"not measured: {why}", "values": {key: None}, "raw": {}}


def measure_attention(ctx: Context, study_dir: Path | None = None) -> dict:
    """Figure (l): the training runs with SDPA and with the config's `attention: auto`, side by side."""
    if skipped := not_measured(ctx, study_dir, "attention_auto_training_speedup"):
        return skipped
    runs = [run for run in representative_runs(ctx.cfg)
            if tbconfig.family(ctx.cfg, run.method).name in TRAINING_FAMILIES]
    pairs = measure_pairs(ctx, study_dir, runs, attention_sides(ctx.cfg), "attention-pairs")
    done = [pair for pair in pairs.values() if pair["ratio"]]
    sdpa_s, auto_s = sum(p["sdpa"]["s"] for p in done), sum(p["auto"]["s"] for p in done)
    deltas = [p["auto"]["metric"] - p["sdpa"]["metric"] for p in done
              if p["auto"]["metric"] is not None and p["sdpa"]["metric"] is not None]
    return {"workload": (f"{len(runs)} training runs of the default study (one per encoder / generative method), "
                         f"each at the same moment with the model entries' attention overridden to sdpa and with "
                         f"the config's `auto`, one thread a side, as Snakemake jobs on {study_dir}'s finished "
                         f"inputs; speed-up = summed SDPA time / summed auto time"),
            "values": {"attention_auto_training_speedup": sdpa_s / auto_s if done and len(done) == len(runs) else None,
                       "attention_auto_test_metric_max_abs_delta": max(map(abs, deltas)) if deltas else None},
            "raw": {"pairs": pairs}}


def measure(ctx: Context, study_dir: Path | None = None) -> dict:
    """Figure (k): one run of each torch method natively and emulating AVX2-only, side by side."""
    if skipped := not_measured(ctx, study_dir, "avx2_pairs_study_ratio"):
        return skipped
    import polars as pl

    study, runs_csv = study_dir, study_dir / "results" / "runs.csv"
    pairs = measure_pairs(ctx, study, representative_runs(ctx.cfg), AVX2_SIDES, "avx2-pairs")
    per_method = method_seconds(runs_csv).group_by("method", "family").agg(pl.col("seconds").sum()).rows(named=True)
    seconds = {r["method"]: r["seconds"] for r in per_method}
    family_of = {r["method"]: r["family"] for r in per_method}
    ratios = {method: pair["ratio"] for method, pair in pairs.items()}
    by_family: dict[str, list[float]] = {}
    for method, ratio in ratios.items():
        if ratio:
            by_family.setdefault(tbconfig.family(ctx.cfg, method).name, []).append(ratio)
    values = {"avx2_pairs_study_ratio": study_ratio(ratios, seconds, family_of),
              **{f"avx2_pairs_{name}_ratio_max": max(r) for name, r in by_family.items()}}
    return {"workload": (f"{len(pairs)} runs of the default study (one per torch method), each run at the same "
                         f"moment natively and emulating AVX2-only ({'+'.join(AVX2_ENVIRONMENT)}), one thread a side, "
                         f"as Snakemake jobs on {study}'s finished inputs; the study ratio weights each method's "
                         f"ratio by its native seconds in {runs_csv} (baselines 1x)"),
            "values": values, "raw": {"pairs": pairs, "native_seconds": seconds}}
