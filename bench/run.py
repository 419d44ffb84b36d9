"""`python -m bench.run [--quick] [--only NAME ...] [--study-log PATH] [--full-study-log PATH] [--run-study]
[--study-dir PATH] [--before-study-dir PATH]`: measure,
then write
latest.json (every number, the machine, the date) and latest.md (figure, workload, value, target, met?).

Figures: finetune (a, b), head_cache (c), icl (d), tokenize (e), snakemake (f), study (g), qlora (h),
generative (i), levers (j), avx2_pairs (k) and attention_pairs (l), these two only with --study-dir,
lm_eval (m, needs the test extra lm-eval) and job_overhead (n, with --study-dir: it only reads the study's logs and
run records); see README.md.
With --only, the other figures keep their values from the previous latest.json in the output folder (each figure
carries its own date and threads; `machine` describes the latest invocation). Quick mode runs tiny slices and tiny
models to prove the code runs; its numbers mean
little, and it writes to bench/results/quick/ unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from .workloads import REPO, Context

# name → (figure letters, module); each module has measure(ctx) → {"workload", "values", "raw"}.
FIGURES = {
    "finetune": ("a, b", "bench.finetune"),
    "head_cache": ("c", "bench.head_cache"),
    "icl": ("d", "bench.icl"),
    "tokenize": ("e", "bench.tokenization"),
    "snakemake": ("f", "bench.workflow"),
    "study": ("g", "bench.workflow"),
    "qlora": ("h", "bench.qlora"),
    "generative": ("i", "bench.generative"),
    "levers": ("j", "bench.levers"),
    "avx2_pairs": ("k", "bench.avx2_pairs"),
    "attention_pairs": ("l", "bench.avx2_pairs"),
    "lm_eval": ("m", "bench.lm_eval_speed"),
    "job_overhead": ("n", "bench.job_overhead"),
}

# (figure name, key, unit, target text, check); a key without a target is reported for context.
TARGETS = [
    ("finetune", "full_ft_speedup_vs_naive", "x", "≥ 5×", lambda v: v >= 5),
    ("finetune", "full_ft_dev_accuracy_delta_pts", "pts", "within ±1 pt", lambda v: abs(v) <= 1),
    ("finetune", "full_ft_fraction_of_peak", "%", "≥ 50% of bf16 peak", lambda v: v >= 0.5),
    ("head_cache", "head_cache_speedup", "x", "≥ 5×", lambda v: v >= 5),
    ("head_cache", "head_cache_speedup_without_extraction", "x", "", None),
    ("head_cache", "head_cache_dev_macro_f1_delta_pts", "pts", "", None),
    ("icl", "icl_scoring_speedup_k0", "x", "≥ 3×", lambda v: v >= 3),
    ("icl", "icl_scoring_speedup_k10", "x", "≥ 3×", lambda v: v >= 3),
    ("tokenize", "tokenize_sentences_per_s", "/s", "", None),
    ("snakemake", "noop_rerun_s", "s", "≤ 3 s", lambda v: v <= 3),
    ("snakemake", "noop_rerun_s_fake_scontrol", "s", "≤ 3 s", lambda v: v <= 3),
    ("snakemake", "default_dryrun_s", "s", "", None),
    ("snakemake", "paper_dryrun_s", "s", "≤ 5 s", lambda v: v <= 5),
    ("snakemake", "paper_dryrun_s_fake_scontrol", "s", "≤ 5 s", lambda v: v <= 5),
    ("snakemake", "paper_jobs", "", "", None),
    # (g) also gives default_study_s, default_study_peak_rss_mb and study_estimate_ratio: the quick study's, by
    # their names of before there were two studies (not repeated in the table).
    ("study", "quick_study_s", "s", "≤ 15 min", lambda v: v <= 15 * 60),
    ("study", "quick_study_estimate_ratio", "x", "0.5–1.5× (estimate / measured)", lambda v: 0.5 <= v <= 1.5),
    ("study", "quick_study_isa", "", "", None),
    ("study", "quick_study_peak_rss_mb", "MB", "", None),
    ("study", "full_study_s", "s", "", None),
    ("study", "full_study_estimate_ratio", "x", "0.5–1.5× (estimate / measured)", lambda v: 0.5 <= v <= 1.5),
    ("study", "full_study_isa", "", "", None),
    ("study", "full_study_peak_rss_mb", "MB", "", None),
    ("study", "default_study_s_avx2", "s", "", None),
    ("study", "avx2_study_ratio", "x", "≤ 2× the native study", lambda v: v <= 2),
    ("study", "study_estimate_ratio_avx2", "x", "0.5–1.5× (estimate / measured)", lambda v: 0.5 <= v <= 1.5),
    ("study", "avx2_study_baseline_time_ratio", "x", "", None),
    ("qlora", "qlora_step_ratio_native", "x", "≤ 2× LoRA's step", lambda v: v <= 2),
    ("qlora", "qlora_step_ratio_avx2", "x", "≤ 2× LoRA's step", lambda v: v <= 2),
    ("qlora", "qlora_matmul_4bit_step_ratio_native", "x", "", None),
    ("qlora", "qlora_matmul_4bit_step_ratio_avx2", "x", "", None),
    ("qlora", "qlora_dev_accuracy_delta_pts_native", "pts", "", None),
    ("qlora", "qlora_dev_accuracy_delta_pts_avx2", "pts", "", None),
    ("qlora", "lora_step_ratio_avx2_vs_native", "x", "", None),
    ("generative", "generative_answer_loss_speedup", "x", "", None),
    ("generative", "generative_answer_loss_last_loss_delta", "", "", None),
    *[("levers", f"lever_{lever}_{what}", unit, "", None) for lever in
      ("attention_dropout_off", "dropout_off", "eager_attention", "pad_multiple_16", "torch_compile")
      for what, unit in (("speedup", "x"), ("dev_accuracy_delta_pts", "pts"))],
    *[("levers", f"lever_gen_{lever}_{what}", unit, "", None) for lever in ("eager_attention", "lora_dropout_off")
      for what, unit in (("speedup", "x"), ("last_loss_delta", ""))],
    ("levers", "lever_icl_eager_attention_speedup", "x", "", None),
    ("levers", "lever_icl_eager_attention_same_predictions", "", "", None),
    ("avx2_pairs", "avx2_pairs_study_ratio", "x", "≤ 2× the native study", lambda v: v <= 2),
    ("attention_pairs", "attention_auto_training_speedup", "x", "", None),
    ("attention_pairs", "attention_auto_test_metric_max_abs_delta", "", "", None),
    ("lm_eval", "lm_eval_scoring_speedup", "x", "", None),
    ("lm_eval", "lm_eval_max_abs_diff", "", "≤ 1e-4 (fp32)", lambda v: v <= 1e-4),
    ("lm_eval", "lm_eval_pairs", "", "", None),
    # (n) also gives each rule's median, p90 and job count (job_overhead_* / job_duration_*_<rule>): latest.md's
    # table under the main one.
    *[("job_overhead", f"job_overhead_{what}{side}", unit, target, check)
      for side in ("", "_before") for what, unit, target, check in (
          ("median_s", "s", "≤ 3 s", lambda v: v <= 3), ("p90_s", "s", "", None), ("jobs", "", "", None))],
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny slices and models: checks the code, not speed")
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), metavar="NAME",
                        help=f"figures to measure (default all): {', '.join(FIGURES)}")
    parser.add_argument("--study-log", help="the quick study's `make timed-run` log (config/config.yaml), for (g)")
    parser.add_argument("--full-study-log", help="the full study's `make timed-run` log (config/study.yaml), for (g)")
    parser.add_argument("--avx2-study-log", help="the same study's `make timed-run EMULATE_AVX2=1` log, for (g)")
    parser.add_argument("--run-study", action="store_true", help="run `make run` under /usr/bin/time -v for (g)")
    parser.add_argument("--study-dir", type=Path,
                        help="a finished default study's repository, for (k) and (l): some of its runs rerun two "
                             "ways side by side (natively and as on an AVX2-only CPU, ~35 min on 2 cores; with SDPA "
                             "and with the config's attention, ~10 min); and for (n), its fixed cost per job")
    parser.add_argument("--before-study-dir", type=Path,
                        help="for (n): a finished study of before, given side by side with --study-dir's")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--out", type=Path, help="output folder (default bench/results, quick: bench/results/quick)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = REPO / "bench" / "results" / ("quick" if args.quick else "")
    return args


def measure(name: str, ctx: Context, args) -> dict:
    module = importlib.import_module(FIGURES[name][1])
    if name == "snakemake":
        return module.measure_snakemake(ctx)
    if name == "study":
        return module.measure_study(ctx, args.study_log, args.out / "study-time.log" if args.run_study else None,
                                    args.avx2_study_log, args.full_study_log)
    if name in ("avx2_pairs", "attention_pairs"):
        study_dir = args.study_dir.resolve() if args.study_dir else None
        return module.measure(ctx, study_dir) if name == "avx2_pairs" else module.measure_attention(ctx, study_dir)
    if name == "job_overhead":
        return module.measure(ctx, *(path.resolve() if path else None for path in (args.study_dir,
                                                                                    args.before_study_dir)))
    return module.measure(ctx)


def machine(threads: int) -> dict:
    from tunebench import hardware, provenance

    versions = provenance.package_versions()
    return {**provenance.hardware(), **hardware.isa(), "threads": threads,
            "torch_threads": _torch_threads(), "git_commit": provenance.git_commit(),
            **{name: versions[name] for name in ("torch", "transformers", "datasets", "tokenizers", "snakemake",
                                                 "tunebench")}}


def isa_flags() -> str:
    """The CPU's vector flags that decide the fast paths (avx2, avx512f, avx512_bf16, amx), beside every figure."""
    from tunebench import hardware

    return " ".join(flag for flag, present in hardware.isa().items() if present) or "none"


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def run(args) -> dict:
    os.chdir(REPO)   # the config's data paths are relative to the repository
    quiet_libraries()
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "latest.json"
    figures = {}
    if args.only and previous.exists():
        old = json.loads(previous.read_text())
        if old.get("quick") == args.quick:
            figures = old.get("figures", {})
    with tempfile.TemporaryDirectory(prefix="tunebench-bench-") as tmp:
        ctx = Context(quick=args.quick, threads=args.threads, tmp=Path(tmp))
        for name in args.only or FIGURES:
            print(f"== {name} ({FIGURES[name][0]})", flush=True)
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            t0 = time.perf_counter()
            try:
                result = measure(name, ctx, args)
            except Exception as e:  # one broken figure must not cost the others' numbers
                traceback.print_exc()
                result = {"workload": "", "values": {}, "raw": {}, "error": f"{type(e).__name__}: {e}"}
            figures[name] = {"figure": FIGURES[name][0], "date": started, "quick": args.quick,
                             "threads": args.threads, "isa": isa_flags(), "bench_s": time.perf_counter() - t0,
                             **result}
            for key, value in result["values"].items():
                print(f"   {key}: {value}", flush=True)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(args.threads),
        **{key: None for _, key, *_ in TARGETS},
        **{key: value for fig in figures.values() for key, value in fig["values"].items()},
        "figures": figures,
    }
    (args.out / "latest.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "latest.md").write_text(markdown(report))
    return report


def fmt(value, unit: str) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, str):
        return value
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "%":
        return f"{100 * value:.1f}%"
    if unit == "pts":
        return f"{value:+.1f} pts"
    if unit == "":
        return f"{value:g}"
    return f"{value:,.1f} {unit}" if unit != "/s" else f"{value:,.0f} /s"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# tunebench benchmarks",
        "",
        f"{report['date']} · {m['cpu']} · {m['cpu_count']} cores · {m['threads']} threads · torch {m['torch']} · "
        f"transformers {m['transformers']} · snakemake {m['snakemake']} · commit {m['git_commit']} · CPU flags: "
        f"{' '.join(flag for flag in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16') if m.get(flag)) or 'none'}",
        "",
    ]
    if report["quick"]:
        lines += ["**Quick mode**: tiny slices and tiny models; these numbers only show the code runs.", ""]
    lines += ["| figure | workload | value | target | met? |", "|---|---|---|---|---|"]
    shown = set()
    for name, key, unit, target, check in TARGETS:
        fig = report["figures"].get(name)
        value = report.get(key)
        met = "—" if check is None or value is None else ("yes" if check(value) else "**no**")
        letter = FIGURES[name][0]
        if fig is None:
            workload = "not run"
        else:
            workload = "(ERROR) " + fig["error"] if fig.get("error") else fig["workload"]
            workload += f"; CPU flags: {fig.get('isa', 'not recorded')}; measured {fig['date']}"
        if name in shown and fig is not None:
            workload = "as above"
        shown.add(name)
        lines.append(f"| ({letter}) `{key}` | {workload.replace('|', '/')} | {fmt(value, unit)} | {target} | {met} |")
    for name, fig in report["figures"].items():
        if fig.get("table"):   # a figure's own breakdown
            lines += ["", f"## ({fig['figure']}) `{name}`", "", *fig["table"]]
    lines += ["", "Raw numbers (both sides of every ratio, per repetition): `latest.json`. What each figure "
              "measures: `bench/README.md`.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(f"wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
    failed = [name for name, fig in report["figures"].items() if fig.get("error")]
    if failed:
        print(f"figures that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
