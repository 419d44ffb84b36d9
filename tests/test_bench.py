"""The benchmark code runs and writes what it promises (no timing is checked here: see bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))

from bench.finetune import training_flops  # noqa: E402
from bench.workflow import job_count, parse_time_log  # noqa: E402


def test_quick_tokenize_writes_json_and_table(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "tokenize", "--threads", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["quick"] is True
    assert report["tokenize_sentences_per_s"] > 0
    assert report["figures"]["tokenize"]["raw"]["rows"] > 0
    assert report["full_ft_speedup_vs_naive"] is None   # not measured, but the key is there
    assert {"cpu", "cpu_count", "threads", "torch", "transformers"} <= set(report["machine"])
    table = (tmp_path / "latest.md").read_text()
    assert "`tokenize_sentences_per_s`" in table and "Quick mode" in table


def test_time_log_parsing(tmp_path):
    log = tmp_path / "time.log"
    log.write_text('\tCommand being timed: "make run"\n\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.50\n'
                   "\tMaximum resident set size (kbytes): 2097152\n\tExit status: 0\n")
    assert parse_time_log(log) == {"wall_s": 3723.5, "peak_rss_mb": 2048.0, "exit_status": 0, "command": "make run",
                                   "estimate_s": pytest.approx(float("nan"), nan_ok=True), "commit": None,
                                   "config_sha256": None, "machine": None, "emulated": None}
    log.write_text("# commit abc123-dirty\n# config config/config.yaml sha256 " + "0f" * 32 + "\n"
                   "# this machine: AMD EPYC\n# estimated time: about 1.9 h (6840 s) for 115 jobs\n"
                   "\tElapsed (wall clock) time (h:mm:ss or m:ss): 12:30.25\n"
                   "\tMaximum resident set size (kbytes): 1024\n")
    timing = parse_time_log(log)
    assert timing["wall_s"] == 750.25 and timing["estimate_s"] == 6840 and timing["commit"] == "abc123-dirty"
    assert timing["config_sha256"] == "0f" * 32
    log.write_text("real 1.0\n")
    with pytest.raises(ValueError, match="time -v"):
        parse_time_log(log)


def test_a_study_log_of_another_config_gives_no_figure(tmp_path):
    from bench.workflow import config_sha256, measure_study
    from bench.workloads import Context

    log = tmp_path / "time.log"
    body = ("# estimated time: about 20 min (1200 s) for 9 jobs\n\tElapsed (wall clock) time (h:mm:ss or m:ss): "
            "16:40\n\tMaximum resident set size (kbytes): 1024\n\tExit status: 0\n")
    ctx = Context(quick=True, threads=1, tmp=tmp_path)
    log.write_text(f"# config config/config.yaml sha256 {config_sha256()}\n" + body)
    current = measure_study(ctx, str(log), None)["values"]
    assert current["default_study_s"] == 1000 and current["study_estimate_ratio"] == pytest.approx(1.2)
    log.write_text("# config config/config.yaml sha256 " + "0" * 64 + "\n" + body)
    stale = measure_study(ctx, str(log), None)
    assert stale["values"]["default_study_s"] is None and "NOT the current config" in stale["workload"]


def study_log(path, configfile, sha, wall, estimate_s, machine, rss_kb=2048, commit="abc") -> str:
    """A `make timed-run` log as bench (g) reads it: header (commit, config hash, machine, estimate), then
    `/usr/bin/time -v`'s lines."""
    head = f"# commit {commit}\n" if commit else ""
    path.write_text(f"{head}# config {configfile} sha256 {sha}\n# this machine: {machine}\n"
                    f"# estimated time: about {estimate_s // 60} min ({estimate_s} s) for 9 jobs\n\tElapsed (wall "
                    f"clock) time (h:mm:ss or m:ss): {wall}\n\tMaximum resident set size (kbytes): {rss_kb}\n"
                    "\tExit status: 0\n")
    return str(path)


def test_an_emulated_avx2_study_log_is_compared_with_the_native_one(tmp_path):
    from bench.workflow import config_sha256, measure_study
    from bench.workloads import Context

    def log(name, machine, wall):
        return study_log(tmp_path / name, "config/config.yaml", config_sha256(), wall, 1800, f"Xeon, {machine}",
                         rss_kb=1024, commit=None)

    ctx = Context(quick=True, threads=1, tmp=tmp_path)
    native = log("native.log", "2 cores, avx2 avx512f avx512_bf16", "16:40")
    avx2 = log("avx2.log", "2 cores, avx2 (emulating avx2+mkl+onednn)", "30:00")
    values = measure_study(ctx, native, None, avx2)["values"]
    assert values["default_study_s_avx2"] == 1800 and values["avx2_study_ratio"] == pytest.approx(1.8)
    assert values["study_estimate_ratio_avx2"] == pytest.approx(1.0)
    # an emulated log is no native figure, and a native log is no AVX2 figure
    swapped = measure_study(ctx, avx2, None, native)
    assert swapped["values"]["default_study_s"] is None and swapped["values"]["avx2_study_ratio"] is None
    assert "emulating avx2+mkl+onednn: not reported" in swapped["workload"]


def test_snakemake_job_count():
    nothing = "Building DAG of jobs...\nNothing to be done (all requested files are present and up to date)."
    assert job_count(nothing) == 0
    stats = "job      count\n-----  -------\nall        1\ntotal      {n}\n"
    assert job_count(stats.format(n=7) + "\nJob stats:\n" + stats.format(n=9)) == 9
    with pytest.raises(ValueError):
        job_count("Error")


def test_training_flops_counts_useful_tokens_and_attention():
    lengths = np.array([10, 20])
    # 6 N per token over 30 tokens, plus 12 L d n² summed over sentences (100 + 400), twice for 2 epochs.
    assert training_flops(lengths, params=1000, layers=2, hidden=8, epochs=2) == 2 * (6 * 1000 * 30 + 12 * 2 * 8 * 500)


def test_quick_qlora_figure_runs_both_cpu_paths(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "qlora", "--threads", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    raw = report["figures"]["qlora"]["raw"]
    assert raw["avx2"]["lora"]["precision"] == "fp32"
    # Emulating an AVX2-only CPU switches the 4-bit base to the dequantise-once path; "off" keeps matmul_4bit.
    assert raw["avx2"]["qlora"]["path"].startswith("4-bit base dequantised once")
    assert raw["avx2"]["qlora_matmul_4bit"]["path"].startswith("bitsandbytes matmul_4bit")
    assert report["qlora_step_ratio_native"] > 0 and report["qlora_step_ratio_avx2"] > 0


def test_quick_icl_figure_scores_and_generates_the_same_prompts(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "icl", "--threads", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert "error" not in report["figures"]["icl"], report["figures"]["icl"].get("error")
    k10 = report["figures"]["icl"]["raw"]["k10"]
    assert k10["queries"] == 8 and len(k10["naive_s"]) == len(k10["scoring_s"]) == 3
    assert k10["shared_prefix_tokens"] > 0   # the demonstrations of a random draw are shared by every prompt
    assert report["icl_scoring_speedup_k0"] > 0 and report["icl_scoring_speedup_k10"] > 0


def test_quick_generative_figure_times_both_losses_on_the_same_steps(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "generative", "--threads", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    figure = report["figures"]["generative"]
    assert "error" not in figure, figure.get("error")
    raw = figure["raw"]
    assert len(raw["naive"]) == len(raw["ours"]) == 2 and {r["steps"] for r in raw["naive"] + raw["ours"]} == {2}
    assert report["generative_answer_loss_speedup"] > 0
    # same seed, same batches, same loss: the last logged losses agree
    assert abs(figure["values"]["generative_answer_loss_last_loss_delta"]) < 1e-3


def test_trial_agreement_compares_the_dev_choices_of_two_studies(tmp_path):
    from bench.trial_agreement import compare

    columns = ["dataset", "model", "method", "chosen_on_dev", "selection_time_s"]
    before = [("d", "m", "full", "learning_rate=0.001", 100.0), ("d", "m", "lora", "learning_rate=0.01", 90.0),
              ("d", "m", "lora-gen", "learning_rate=0.01", 90.0), ("d", "none", "head", "C=1", None)]
    after = [("d", "m", "full", "learning_rate=0.001", 30.0), ("d", "m", "lora", "learning_rate=0.003", 25.0)]
    for name, rows in (("before", before), ("after", after)):
        pl.DataFrame(rows, schema=columns, orient="row").write_csv(tmp_path / f"{name}.csv")
    table = compare(str(tmp_path / "before.csv"), str(tmp_path / "after.csv"))
    assert table.select("method", "agree").rows() == [("full", True), ("lora", False)]


def test_quick_levers_train_each_variant_and_report_it(tmp_path):
    """Figure (j) on the tiny BERT: each lever really changes what it names, and trains."""
    from bench.levers import measure, set_dropout
    from bench.workloads import Context
    from torch import nn

    from tiny_models import build_tiny_bert  # noqa: F401 (quick mode's encoder)

    result = measure(Context(quick=True, threads=1, tmp=tmp_path))
    runs = result["raw"]["runs"]
    assert all("train_s" in run for lever in runs for run in runs[lever]), runs
    assert {run["attention"] for run in runs["eager_attention"]} == {"eager"}
    assert {run["attention"] for run in runs["current"]} == {"sdpa"}
    assert result["values"]["lever_dropout_off_speedup"] > 0
    generative = result["raw"]["generative"]["runs"]
    assert {run["attention"] for run in generative["eager_attention"]} == {"eager"}
    assert result["values"]["lever_gen_lora_dropout_off_speedup"] > 0
    assert {run["attention"] for run in generative["current"]} == {"sdpa"}
    assert result["values"]["lever_icl_eager_attention_speedup"] > 0
    assert 0 <= result["values"]["lever_icl_eager_attention_same_predictions"] <= 1
    assert len(result["raw"]["icl"]["eager_s"]) == len(result["raw"]["icl"]["sdpa_s"]) > 0

    layer = nn.ModuleDict({"attention": nn.ModuleDict({"self": nn.ModuleDict({"dropout": nn.Dropout(0.1)})}),
                           "output": nn.ModuleDict({"dropout": nn.Dropout(0.1)})})
    set_dropout(layer, attention_only=True)
    assert layer["attention"]["self"]["dropout"].p == 0 and layer["output"]["dropout"].p == 0.1


def test_avx2_pairs_pick_one_training_run_per_torch_method_and_weight_the_study():
    """Figure (k): every torch method of the default study once (seed 1 where a selected method's seed 0 would only
    evaluate its trial); the study ratio weights the methods' ratios by their native seconds, baselines at 1x."""
    from bench.avx2_pairs import representative_runs, study_ratio

    from tunebench import config as tbconfig

    cfg = tbconfig.load(REPO / "config" / "config.yaml")
    runs = {run.method: run for run in representative_runs(cfg)}
    torch_methods = {run.method for run in tbconfig.runs(cfg) if tbconfig.family(cfg, run.method).name != "baseline"}
    assert set(runs) == torch_methods
    assert runs["full"].seed == 1 and runs["llm_lora"].seed == 1 and runs["llm_k0"].seed == 0
    first_dataset = {}
    for run in tbconfig.runs(cfg):
        first_dataset.setdefault(run.method, run.dataset)
    assert all(run.dataset == first_dataset[method] for method, run in runs.items())   # each on its first dataset

    family = {"tfidf": "baseline", "full": "encoder", "llm_k5": "icl"}
    seconds = {"tfidf": 10.0, "full": 60.0, "llm_k5": 30.0}
    assert study_ratio({"full": 2.0, "llm_k5": 3.0}, seconds, family) == pytest.approx((10 + 120 + 90) / 100)
    assert study_ratio({"full": 2.0}, seconds, family) is None      # a torch method without its pair


def test_avx2_pairs_scratch_tree_links_everything_but_the_runs(tmp_path):
    from bench.avx2_pairs import LINKED, measure, measure_attention, scratch_tree
    from bench.workloads import Context

    study = tmp_path / "study"
    for name in LINKED:
        (study / name).mkdir(parents=True)
    for name in ("data", "selection", "runs"):
        (study / "results" / name).mkdir(parents=True)
    (study / "results" / "runs.csv").write_text("x\n")
    tree = scratch_tree(tmp_path / "tree", study)
    assert (tree / "workflow").resolve() == (study / "workflow").resolve()
    assert (tree / "results" / "selection").is_symlink() and not (tree / "results" / "runs").exists()
    assert not (tree / "results" / "runs.csv").exists()
    result = measure(Context(quick=False, threads=1, tmp=tmp_path), None)
    assert result["values"] == {"avx2_pairs_study_ratio": None} and "--study-dir" in result["workload"]
    result = measure_attention(Context(quick=True, threads=1, tmp=tmp_path), study)
    assert result["values"] == {"attention_auto_training_speedup": None} and "quick" in result["workload"]


def test_attention_pairs_override_reaches_every_model_entry_through_snakemake_config():
    """Figure (l)'s SDPA side: Snakemake merges the --config value into the config, so both model entries of the
    default study lose `auto` and keep every other key."""
    from bench.avx2_pairs import attention_sides
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    from tunebench import config as tbconfig

    cfg = tbconfig.load(REPO / "config" / "config.yaml")
    before = {name: dict(entry) for name, entry in cfg["models"].items()}
    update_config(cfg, parse_config([attention_sides(cfg)["sdpa"][1]]))
    assert {name: entry["attention"] for name, entry in cfg["models"].items()} == {"minilm": "sdpa", "smollm2": "sdpa"}
    assert all({**before[name], "attention": "sdpa"} == cfg["models"][name] for name in before)
    assert all(entry.get("attention") == "auto" for entry in before.values())


def test_quick_lm_eval_figure_scores_the_same_pairs_both_ways(tmp_path):
    """Figure (m) on a tiny ChatML Llama: both sides time every pair, and they agree on the same tokens."""
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "lm_eval", "--threads", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    figure = report["figures"]["lm_eval"]
    assert "error" not in figure, figure.get("error")
    raw = figure["raw"]
    assert len(raw["ours_s"]) == len(raw["lm_eval_s"]) == 3 and report["lm_eval_scoring_speedup"] > 0
    agreement = raw["agreement"]
    assert report["lm_eval_pairs"] == agreement["pairs"] == 36      # 2 texts × 3 methods × 2 datasets × 3 labels
    assert report["lm_eval_max_abs_diff"] <= 1e-4
    assert agreement["shifted_min_abs_diff"] > 1e-2 and agreement["token_sequence_mismatches"] == 0
    assert "`lm_eval_scoring_speedup`" in (tmp_path / "latest.md").read_text()


def crafted_study(root, jobs, logs=1):
    """A finished study's files as figure (n) reads them: Snakemake logs and run records. `jobs`: (rule, jobid,
    start, end, run seconds or None, wildcards dict, record's start offset in s) in log order, times in s."""
    from datetime import datetime, timedelta

    t0 = datetime(2026, 12, 7, 11, 23, 10)
    stamp = lambda s: (t0 + timedelta(seconds=s)).strftime("[%a %b %e %H:%M:%S %Y]")  # noqa: E731
    lines = ["  Command: .venv/bin/snakemake --cores 2 --configfile config/config.yaml", "Job stats:",
             "job      count", "total        9", ""]
    for rule, jobid, start, end, run_s, wildcards, offset in jobs:
        path = "results/runs/{dataset}/{model}/{method}/seed{seed}".format(**wildcards) if run_s is not None else ""
        output = f"{path}/predictions.parquet, {path}/metrics.json" if path else f"results/data/{jobid}.parquet"
        lines += [stamp(start), f"localrule {rule}:", "    input: results/data/fpb/table.parquet",
                  f"    output: {output}", f"    jobid: {jobid}", "    reason: Missing output files",
                  "    wildcards: " + ", ".join(f"{k}={v}" for k, v in wildcards.items()), ""]
        if end is not None:
            lines += [stamp(end), f"Finished jobid: {jobid} (Rule: {rule})", "1 of 9 steps (11%) done"]
        if path:
            record = root / path / "metrics.json"
            record.parent.mkdir(parents=True, exist_ok=True)
            started = (t0 + timedelta(seconds=start + offset)).astimezone().isoformat()
            record.write_text(json.dumps({"cost": {"wall_time_s": run_s},
                                          "provenance": {"started": started, "git_commit": "a2c2fb5" + "0" * 33}}))
    folder = root / ".snakemake" / "log"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "2026-12-07T112310.000000.snakemake.log").write_text("\n".join(lines) + "\n")
    return root


def run_wildcards(method, seed=0):
    return {"dataset": "fpb", "model": "minilm", "method": method, "seed": seed}


def test_job_overhead_is_each_jobs_duration_minus_its_run_time_per_rule(tmp_path):
    """Figure (n): a job's overhead is its Snakemake span minus its run record's wall time; jobs without a record
    (prepare, tune_*) have durations alone; an unfinished job, or a record of another invocation, has none."""
    from bench.job_overhead import measure

    study = crafted_study(tmp_path / "after", [
        ("prepare", 1, 0, 2, None, {"dataset": "fpb"}, 0),
        ("finetune_encoder", 2, 2, 14, 10.5, run_wildcards("full"), 1),          # overhead 1.5
        ("finetune_encoder", 3, 2, 20, 16.0, run_wildcards("lora"), 1),          # 2.0
        ("finetune_encoder", 4, 14, 30, 12.0, run_wildcards("top_k"), 1),        # 4.0
        ("run_baseline", 5, 20, 23, 2.0, run_wildcards("tfidf"), 0.5),           # 1.0
        ("run_baseline", 6, 23, 40, 2.0, run_wildcards("majority"), -60),        # its record is older: stale
        ("tune_encoder", 7, 30, 70, None, {"dataset": "fpb", "model": "minilm", "method": "qlora"}, 0),
        ("finetune_encoder", 8, 70, None, 1.0, run_wildcards("qlora"), 1),       # never finished
    ])
    result = measure(None, study)
    values = result["values"]
    assert values["job_overhead_median_s"] == pytest.approx(1.75) and values["job_overhead_jobs"] == 4
    assert values["job_overhead_median_s_finetune_encoder"] == pytest.approx(2.0)
    assert values["job_overhead_p90_s_finetune_encoder"] == pytest.approx(3.6)   # 2.0 + 0.8 × (4.0 − 2.0)
    assert values["job_overhead_jobs_finetune_encoder"] == 3
    assert values["job_overhead_jobs_run_baseline"] == 1 and values["job_overhead_median_s_run_baseline"] == 1.0
    assert values["job_duration_median_s_prepare"] == 2 and values["job_duration_median_s_tune_encoder"] == 40
    assert not any(key.endswith("_before") for key in values)
    summary = result["raw"]["study"]["summary"]
    assert summary["rules"]["run_baseline"]["stale"] == 1
    assert result["raw"]["study"]["logs"][0] | {"log": None} == {
        "log": None, "command": ".venv/bin/snakemake --cores 2 --configfile config/config.yaml", "planned": 9,
        "finished": 7}
    assert "1-s resolution" in result["workload"] and "commit a2c2fb5" in result["workload"]

    # before and after side by side: the before study's keys end in _before, one table column each
    before = crafted_study(tmp_path / "before", [("finetune_encoder", 2, 0, 20, 12.0, run_wildcards("full"), 1)])
    both = measure(None, study, before)
    assert both["values"]["job_overhead_median_s_before"] == 8.0 and both["values"]["job_overhead_median_s"] == 1.75
    assert both["table"][0].count("jobs / median / p90") == 2 and "before:" in both["table"][0]
    overall = next(row for row in both["table"] if row.startswith("| overall"))
    assert overall == "| overall | overhead | 1 / 8.0 / 8.0 | 4 / 1.8 / 3.4 |"
    assert measure(None, None)["values"] == {"job_overhead_median_s": None}


def test_job_overhead_counts_a_job_run_again_in_a_later_log_once(tmp_path):
    from bench.job_overhead import measure

    study = crafted_study(tmp_path, [("finetune_encoder", 2, 0, 20, 1.0, run_wildcards("full"), -100)])
    # the later invocation ran it again (its record is the later run's): only that run counts
    later = (study / ".snakemake" / "log" / "2026-12-07T112310.000000.snakemake.log").read_text()
    crafted_study(tmp_path, [("finetune_encoder", 9, 100, 103, 1.0, run_wildcards("full"), 1)])
    (study / ".snakemake" / "log" / "2026-12-07T100000.000000.snakemake.log").write_text(later)
    values = measure(None, study)["values"]
    assert values["job_overhead_jobs"] == 1 and values["job_overhead_median_s"] == 2.0


def test_quick_job_overhead_figure_writes_its_table(tmp_path):
    study = crafted_study(tmp_path / "study", [("run_baseline", 5, 0, 3, 1.0, run_wildcards("tfidf"), 0.5)])
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "job_overhead", "--study-dir",
                           str(study), "--before-study-dir", str(study), "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["job_overhead_median_s"] == report["job_overhead_median_s_before"] == 2.0
    table = (tmp_path / "latest.md").read_text()
    assert "| (n) `job_overhead_median_s` |" in table and "## (n) `job_overhead`" in table
    assert "| run_baseline | overhead | 1 / 2.0 / 2.0 | 1 / 2.0 / 2.0 |" in table


def test_the_quick_and_the_full_study_each_from_its_own_log(tmp_path):
    """Figure (g) for both configs: each log checked against its own config's sha256, with its estimate ratio and
    the flags of the machine it ran on; the quick study's values keep their old names too."""
    from bench.workflow import config_sha256, measure_study
    from bench.workloads import Context

    def log(name, configfile, sha, wall, estimate_s, machine="AMD EPYC, 2 cores, avx2 avx512f avx512_bf16"):
        return study_log(tmp_path / name, configfile, sha, wall, estimate_s, machine)

    ctx = Context(quick=True, threads=1, tmp=tmp_path)
    quick = log("quick.log", "config/config.yaml", config_sha256("config/config.yaml"), "12:00", 600)
    full = log("full.log", "config/study.yaml", config_sha256("config/study.yaml"), "2:00:00", 9000)
    result = measure_study(ctx, quick, None, None, full)
    values = result["values"]
    assert values["quick_study_s"] == values["default_study_s"] == 720
    assert values["quick_study_estimate_ratio"] == values["study_estimate_ratio"] == pytest.approx(600 / 720)
    assert values["full_study_s"] == 7200 and values["full_study_estimate_ratio"] == pytest.approx(1.25)
    assert values["full_study_isa"] == values["quick_study_isa"] == "avx2 avx512f avx512_bf16"
    assert values["full_study_peak_rss_mb"] == 2.0
    assert "quick study (config/config.yaml" in result["workload"] and "full study (config/study.yaml" in result["workload"]

    # the logs in each other's places: neither is its study's
    swapped = measure_study(ctx, full, None, None, quick)
    assert swapped["values"]["quick_study_s"] is None and swapped["values"]["full_study_s"] is None
    assert "NOT the current config/study.yaml" in swapped["workload"]
    # only the full one: the quick study is not measured, and says how to give it
    alone = measure_study(ctx, None, None, None, full)
    assert alone["values"]["quick_study_s"] is None and alone["values"]["full_study_s"] == 7200
    assert "give --study-log" in alone["workload"]

    # an AVX2-only log of the full config is compared with the full study
    avx2 = log("avx2.log", "config/study.yaml", config_sha256("config/study.yaml"), "3:00:00", 9000,
               "AMD EPYC, 2 cores, avx2 (emulating avx2+mkl+onednn)")
    values = measure_study(ctx, quick, None, avx2, full)["values"]
    assert values["avx2_study_ratio"] == pytest.approx(1.5) and values["full_study_isa"] == "avx2 avx512f avx512_bf16"
