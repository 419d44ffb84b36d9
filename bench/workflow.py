"""Figures (f) and (g): Snakemake's own overhead, and the two studies end to end.

(f) `snakemake --dry-run` started twice on the default config: the second start is timed. In the repository when
    its results/ hold a finished default study (then it is the no-op rerun a user pays), else in a fresh working
    folder (then it is the dry-run of the whole DAG, and the result says so). Then the dry-run time and job count
    of config/paper.yaml in a fresh working folder (the full DAG).
    The SLURM executor plugin runs `scontrol show config` when it loads; with slurm-client installed but no
    slurmctld answering, that costs seconds per Snakemake start. So every timing is taken twice: as is, and with
    a fake `scontrol` that exits 1 at once first on PATH (= a machine without that cost).
(g) Wall time, peak RSS and estimate ratio of the quick study (config/config.yaml) and the full one
    (config/study.yaml), each from its `make timed-run` log (`/usr/bin/time -v`, headed by the commit, config
    sha256, machine and estimate; a log of another config gives no figure). /usr/bin/time reports the largest
    single process's peak (ru_maxrss of the children), not the sum over concurrent jobs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from tunebench import estimate

from .workloads import REPO, Context, timed

DEFAULT_CONFIG = "config/config.yaml"
PAPER_CONFIG = "config/paper.yaml"


def fake_scontrol_env(tmp: Path) -> dict:
    folder = tmp / "fake-scontrol"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "scontrol"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}


def fresh_workdir(path: Path) -> Path:
    """A working folder with no results: links to the repository's data and config."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("data", "config"):
        if not (path / name).exists():
            (path / name).symlink_to(REPO / name)
    return path


def dry_run(workdir: Path, configfile: str, env: dict) -> dict:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", configfile, "--dry-run", "--quiet", "rules"]
    proc, seconds = timed(subprocess.run, cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake dry-run failed in {workdir}:\n{proc.stderr[-3000:]}")
    return {"seconds": seconds, "jobs": job_count(proc.stdout + proc.stderr)}


def job_count(output: str) -> int:
    if "Nothing to be done" in output:
        return 0
    totals = re.findall(r"^total\s+(\d+)\s*$", output, flags=re.MULTILINE)
    if not totals:
        raise ValueError(f"no job count in snakemake's output:\n{output[-2000:]}")
    return int(totals[-1])


def second_start(workdir: Path, configfile: str, env: dict) -> dict:
    first = dry_run(workdir, configfile, env)
    second = dry_run(workdir, configfile, env)
    return {"first_s": first["seconds"], "seconds": second["seconds"], "jobs": second["jobs"]}


def second_make_run(env: dict) -> dict:
    runs = []
    for _ in range(2):
        proc, seconds = timed(subprocess.run, ["make", "run", "CORES=1"], cwd=REPO, env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0 or "Nothing to be done" not in proc.stdout + proc.stderr:
            raise RuntimeError(f"`make run` on the finished study was no no-op:\n{(proc.stdout + proc.stderr)[-3000:]}")
        runs.append(seconds)
    return {"first_s": runs[0], "seconds": runs[1]}


def scontrol_probe() -> dict:
    """How long `scontrol show config` takes here, as the SLURM plugin calls it (None: no scontrol)."""
    if not shutil.which("scontrol"):
        return {"scontrol": None}
    proc, seconds = timed(subprocess.run, ["scontrol", "show", "config"], capture_output=True, text=True)
    return {"scontrol": shutil.which("scontrol"), "show_config_s": seconds, "returncode": proc.returncode}


def measure_snakemake(ctx: Context) -> dict:
    variants = {"fake_scontrol": fake_scontrol_env(ctx.tmp)}
    if not ctx.quick:   # quick mode skips the as-is timings: with no slurmctld each start can cost ~9 s more
        variants = {"as_is": dict(os.environ), **variants}
    probe = dry_run(REPO, DEFAULT_CONFIG, variants["fake_scontrol"])
    finished = probe["jobs"] == 0
    default_dir = fresh_workdir(ctx.tmp / "workdir-default")
    paper_dir = fresh_workdir(ctx.tmp / "workdir-paper")
    # The no-op rerun a user pays: `make run` (the estimate, then a real `snakemake`, not -n) started twice on
    # the finished study, the second timed.
    noop = {name: second_make_run(env) for name, env in variants.items()} if finished else {}
    default = {name: second_start(default_dir, DEFAULT_CONFIG, env) for name, env in variants.items()}
    paper = {name: dry_run(paper_dir, PAPER_CONFIG, env) for name, env in variants.items()}
    headline = "as_is" if "as_is" in variants else "fake_scontrol"
    what = ("second `make run` (the time estimate, then a real `snakemake`) on the finished default study in the "
            "repository (nothing to do)" if finished else f"not measured: results/ holds no finished default study ({probe['jobs']} jobs "
            "to run)")
    return {
        "workload": (f"no-op rerun: {what}; dry-runs: second `snakemake -n` of the whole default DAG "
                     f"({default[headline]['jobs']} jobs) and `snakemake -n` of {PAPER_CONFIG}, each in a fresh "
                     f"folder. Headline values: {headline.replace('_', ' ')}"
                     + ("" if "as_is" in variants else " (quick mode: as-is timings skipped)")
                     + "; the other variant under raw"),
        "values": {
            "noop_rerun_s": noop[headline]["seconds"] if noop else None,
            "noop_rerun_s_fake_scontrol": noop["fake_scontrol"]["seconds"] if noop else None,
            "default_dryrun_s": default[headline]["seconds"],
            "paper_dryrun_s": paper[headline]["seconds"],
            "paper_dryrun_s_fake_scontrol": paper["fake_scontrol"]["seconds"],
            "paper_jobs": paper[headline]["jobs"],
        },
        "raw": {"default_study_finished": finished, "default_jobs_remaining_in_repo": probe["jobs"],
                "noop": noop, "default": default, "paper": paper, "headline_variant": headline,
                **scontrol_probe()},
    }


# --- (g) the quick and the full study -------------------------------------------------------------------------

STUDIES = {"quick": DEFAULT_CONFIG, "full": "config/study.yaml"}   # which config each study's log must be of


def parse_time_log(path) -> dict:
    return estimate.parse_time_log(Path(path).read_text(), str(path))


def config_sha256(configfile: str = DEFAULT_CONFIG) -> str:
    return hashlib.sha256((REPO / configfile).read_bytes()).hexdigest()


def log_config(path) -> str | None:
    """The config file a `make timed-run` log names in its header."""
    found = re.search(r"(?m)^# config (\S+) sha256", Path(path).read_text())
    return found.group(1) if found else None


def isa_flags(machine: str | None) -> str | None:
    """The CPU's vector flags from a log's `# this machine:` line (an emulation's parenthesis left out)."""
    if not machine:
        return None
    return " ".join(re.findall(r"\b(?:avx|amx|sse|neon|sve)\w*", machine.split("(emulating")[0])) or "none"


def run_study(log: Path) -> Path:
    subprocess.run(["make", "timed-run", f"STUDY_LOG={log}"], cwd=REPO, check=False)
    return log


def estimate_ratio(timing: dict) -> float | None:
    """The estimate `make timed-run` printed before the start over the measured time (#15: within ±50%)."""
    return timing["estimate_s"] / timing["wall_s"] if timing["estimate_s"] == timing["estimate_s"] else None


def one_study(kind: str, log: str | None) -> tuple[dict, dict, str]:
    """(values, raw, workload) of the quick or full study's `make timed-run` log; a log of another config (its
    sha256 against the current file) or an emulated one gives None values, and the workload says why."""
    configfile = STUDIES[kind]
    keys = [f"{kind}_study_{what}" for what in ("s", "peak_rss_mb", "estimate_ratio", "isa")]
    if not log:
        option = "--study-log" if kind == "quick" else "--full-study-log"
        return dict.fromkeys(keys), {}, f"{kind} study ({configfile}): not measured, give {option} PATH"
    timing = parse_time_log(log)
    current = config_sha256(configfile)
    isa = isa_flags(timing["machine"])
    values = dict(zip(keys, (timing["wall_s"], timing["peak_rss_mb"], estimate_ratio(timing), isa)))
    note = "" if timing["exit_status"] in (0, None) else f" — the study FAILED (exit status {timing['exit_status']})"
    if timing["config_sha256"] != current or timing["emulated"]:
        why = (f"emulating {timing['emulated']}" if timing["emulated"] else
               f"NOT the current {configfile} (log: {log_config(log) or 'no config'} "
               f"{timing['config_sha256'] or 'no config hash'}, now: {current[:12]})")
        note += f" — {why}: not reported"
        values = dict.fromkeys(keys)
    workload = (f"{kind} study ({configfile}; `{timing['command'] or 'make run'}`, commit "
                f"{timing['commit'] or 'unknown'}) from {log}, on {timing['machine'] or 'an unrecorded machine'}"
                f"{note}")
    return values, {**timing, "log": log, "configfile": configfile, "current_config_sha256": current}, workload


def measure_study(ctx: Context, study_log: str | None, run_into: Path | None, avx2_log: str | None = None,
                  full_log: str | None = None) -> dict:
    """Both studies from their `make timed-run` logs (headed by the commit, config sha256, machine and estimate):
    `study_log` the quick one (config/config.yaml; with run_into, a log path, and not in quick mode, by running
    it), `full_log` the full one (config/study.yaml). A log of another config is no figure of either.
    `avx2_log`: a study emulating an AVX2-only CPU (`make timed-run EMULATE_AVX2=1`), against the native log of
    the same config — its time over the native one is #15's figure (≤ 2×)."""
    if run_into and not ctx.quick:
        study_log = str(run_study(run_into))
    values, raw, parts = {}, {}, []
    for kind, log in (("quick", study_log), ("full", full_log)):
        study_values, raw[kind], text = one_study(kind, log)
        values |= study_values
        parts.append(text)
    # the keys of before there were two studies: the default config's, now the quick study
    values |= {"default_study_s": values["quick_study_s"],
               "default_study_peak_rss_mb": values["quick_study_peak_rss_mb"],
               "study_estimate_ratio": values["quick_study_estimate_ratio"]}
    workload = "; ".join(parts) + ". Peak RSS is the largest single process"
    if avx2_log:
        avx2 = parse_time_log(avx2_log)
        kind = "full" if log_config(avx2_log) == STUDIES["full"] else "quick"
        native_s, native_log = values[f"{kind}_study_s"], raw[kind].get("log")
        usable = (avx2["emulated"] and avx2["config_sha256"] == config_sha256(STUDIES[kind])
                  and avx2["exit_status"] in (0, None) and native_s)
        values["default_study_s_avx2"] = avx2["wall_s"] if usable else None
        values["study_estimate_ratio_avx2"] = estimate_ratio(avx2) if usable else None
        values["avx2_study_ratio"] = avx2["wall_s"] / native_s if usable else None
        workload += (f"; AVX2-only: the {kind} study emulating {avx2['emulated'] or '(not emulated!)'} "
                     f"(commit {avx2['commit'] or 'unknown'}) from {avx2_log}"
                     + ("" if usable else " — not usable (not emulated, another config, or failed): not reported"))
        by_method = (method_comparison(Path(native_log).parent / "runs.csv", Path(avx2_log).parent / "runs.csv")
                     if native_log else {})
        raw["avx2"] = {**avx2, "log": avx2_log, "native": kind, "by_method": by_method}
        # The two studies ran at different times on a shared machine: the baselines (scikit-learn, no torch
        # matmuls, nothing the emulation touches) show how much of the ratio is the machine's load, not the ISA.
        baseline = [m["time_ratio"] for m in by_method.values() if m["family"] == "baseline" and m["time_ratio"]]
        values["avx2_study_baseline_time_ratio"] = statistics.median(baseline) if usable and baseline else None
    return {"workload": workload, "values": values, "raw": raw}


def method_seconds(runs_csv: Path):
    """Per (dataset, method, family) of a study's runs.csv: its run time over seeds (training + evaluation) plus
    its own selection trials, counted once (a borrowed rate's trials are the lender's), and the mean test metric
    (macro-F1 or R²)."""
    import polars as pl

    runs = pl.read_csv(runs_csv, infer_schema_length=None).filter(~pl.col("method").str.ends_with("-gen"))
    metric = pl.coalesce(pl.col("macro_f1"), pl.col("r2")).cast(pl.Float64)
    selection = pl.col("selection_time_s").cast(pl.Float64).fill_null(0)
    if "learning_rate_from" in runs.columns:
        selection = pl.when(pl.col("learning_rate_from").is_null()).then(selection).otherwise(0.0)
    return runs.group_by("dataset", "method", "family").agg(
        (pl.col("wall_time_s").cast(pl.Float64).sum() + selection.max()).alias("seconds"),
        metric.mean().alias("metric"))


def method_comparison(native_csv: Path, avx2_csv: Path) -> dict:
    """Per (dataset, method) over seeds: AVX2 run time / native run time (training + evaluation + the method's own
    selection trials, counted once), and the test metric AVX2 minus native (macro-F1 or R²). Empty without both files."""
    if not (native_csv.exists() and avx2_csv.exists()):
        return {}
    joined = method_seconds(native_csv).join(method_seconds(avx2_csv), on=["dataset", "method", "family"],
                                             suffix="_avx2")
    return {f"{r['dataset']}/{r['method']}": {"family": r["family"],
                                              "time_ratio": r["seconds_avx2"] / r["seconds"] if r["seconds"] else None,
                                              "metric_delta": (r["metric_avx2"] - r["metric"]
                                                               if r["metric"] is not None and r["metric_avx2"] is not None
                                                               else None)}
            for r in joined.sort("dataset", "method").iter_rows(named=True)}
