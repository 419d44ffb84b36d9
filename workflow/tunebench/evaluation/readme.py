"""README.md's and docs/*.md's numbers, generated from what the repository keeps: nobody types a number in.

A generated passage sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`; its text is exactly
what BLOCKS[NAME] makes of the kept results: the full study in docs/results/ (summary.csv, runs.csv,
comparisons.csv and the `make timed-run` log study_time.log, copied there by `make keep-results`), the quick
study in docs/results/quick/ once it is kept, the AVX2-only run in docs/results/avx2/, the configs and the
benchmarks' bench/results/latest.json. Whatever those folders hold, the blocks say it: a log that is absent is
"not yet measured", a study run before the current protocol says so. tests/test_readme.py regenerates every
block and compares; after new results are kept, `python -m tunebench.evaluation.readme` rewrites the blocks in
place (`--check` only compares). Nothing here runs in the workflow.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tunebench import config as tbconfig
from tunebench import families
from tunebench.evaluation.metrics import primary_direction
from tunebench.evaluation.report import commits_text, to_markdown
from tunebench.evaluation.sections import (FAMILY_NAMES, GENERATED, fmt, fmt_ci, fmt_p, fmt_pct, group_notes,
                                           label, metric_name, table, value_cell)

REPO = Path(__file__).resolve().parents[3]
PRIMARY = {"classification": "macro_f1", "regression": "r2"}
FAMILY_ORDER = ["baseline", "encoder", "embedding", "icl", "generative"]
# A headline row names its family in full (the report's FAMILY_NAMES are cell-sized).
FAMILY_ROWS = {"baseline": "baselines", "encoder": "encoder fine-tuning", "embedding": "frozen embeddings",
               "icl": "prompting", "generative": "generative fine-tuning"}
# The first commit of the current protocol (near-duplicate units in the splits, prompting's scoring rules, the
# cluster bootstrap, selection on the mean of two seeds with growing grids: #28, #29). A kept study of an earlier
# commit is the previous protocol's.
PROTOCOL_SINCE = "8016a6f"
BEGIN = re.compile(r"<!-- generated:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /generated:(?P=name) -->", re.S)


# ---- what is kept ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kept:
    """One kept study (a folder `make keep-results` filled): its tables, None where a file is absent."""
    folder: Path
    summary: pl.DataFrame | None
    runs: pl.DataFrame | None
    comparisons: pl.DataFrame | None
    time: dict | None
    # `make timed-run` logs of jobs added to the study later (`study_time_added*.log`: a new method run on the
    # finished study's results), each with the commit it ran at.
    added: tuple[dict, ...] = ()


def read_kept(folder: Path) -> Kept:
    def table_of(name):
        path = folder / name
        return pl.read_csv(path, infer_schema_length=None) if path.exists() else None
    return Kept(folder, table_of("summary.csv"), table_of("runs.csv"), table_of("comparisons.csv"),
                study_time(folder / "study_time.log"),
                tuple(study_time(p) for p in sorted(folder.glob("study_time_added*.log"))))


def clock_seconds(text: str) -> float:
    """'1:04:50' (h:mm:ss) or '12:34.56' (m:ss) → seconds."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


LOG_FIELDS = [  # (key, pattern, conversion): the header `make timed-run` writes, then /usr/bin/time -v's record
    ("commit", r"# commit (\S+)", str),
    ("config", r"# config (\S+) sha256", str),
    ("cpu", r"# this machine: (.*), \d+ cores?\b", str),
    ("cores", r"# this machine: .*, (\d+) cores?\b", int),
    ("estimate_s", r"estimated time: about .*?\((\d+) s\)", int),
    ("jobs", r"estimated time: .* for (\d+) jobs", int),
    ("wall_s", r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", clock_seconds),
    ("user_s", r"User time \(seconds\): (\S+)", float),
    ("system_s", r"System time \(seconds\): (\S+)", float),
    ("peak_rss_kb", r"Maximum resident set size \(kbytes\): (\d+)", int),
    ("exit_status", r"Exit status: (\d+)", int),
]


def study_time(path: Path) -> dict | None:
    """What a `make timed-run` log says; None where there is no log. A log without its wall time is an error,
    not a study that was not measured."""
    if not path.exists():
        return None
    text = path.read_text()
    info = {"log": path}
    for key, pattern, convert in LOG_FIELDS:
        match = re.search(pattern, text, re.M)
        if match:
            info[key] = convert(match.group(1))
    if "wall_s" not in info:
        raise ValueError(f"{path}: no 'Elapsed (wall clock) time' line: not a `make timed-run` log")
    return info


def duration(seconds: float) -> str:
    """3890 → '1 h 05 min', 840 → '14 min' (to the nearest minute)."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def study_commit(kept: Kept) -> str | None:
    """The commit the study ran at: its log's header, else the commit most of its runs name."""
    if kept.time and kept.time.get("commit"):
        return kept.time["commit"]
    if kept.runs is None or "git_commit" not in kept.runs.columns or not kept.runs["git_commit"].drop_nulls().len():
        return None
    return kept.runs["git_commit"].drop_nulls().mode().sort()[0]


def protocol_of(commit: str | None, repo: Path = REPO) -> str | None:
    """'current' (at or after PROTOCOL_SINCE), 'previous' (before it), None (no commit, or git cannot tell)."""
    if not commit:
        return None
    commit = commit.removesuffix("-dirty")

    def ancestor(a: str, b: str) -> bool:
        return subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", a, b],
                              capture_output=True).returncode == 0
    try:
        if ancestor(PROTOCOL_SINCE, commit):
            return "current"
        if ancestor(commit, PROTOCOL_SINCE):
            return "previous"
    except OSError:
        pass
    return None


def short(commit: str) -> str:
    return commit.removesuffix("-dirty")[:7]


# ---- README: the headline table and the two commands -----------------------------------------------------------

def families_of(runs: pl.DataFrame) -> dict:
    if "family" not in runs.columns:
        return {}
    return {(r["dataset"], r["model"], r["method"]): r["family"]
            for r in runs.select("dataset", "model", "method", "family").unique().iter_rows(named=True)}


def family_best(summary: pl.DataFrame, runs: pl.DataFrame, primary=PRIMARY) -> dict:
    """Per dataset: (metric, ranked rows, {family: its best row}) by the primary metric. The freely generated
    answers (`<method>-gen`) are the same runs read another way, not another method: left out."""
    families, out = families_of(runs), {}
    for dataset in summary["dataset"].unique(maintain_order=True).to_list():
        part = summary.filter(pl.col("dataset") == dataset)
        metric = primary.get(part["task"][0], "macro_f1") if isinstance(primary, dict) else primary
        ranked = (part.filter((pl.col("metric") == metric) & ~pl.col("method").str.ends_with(GENERATED))
                  .sort("mean", descending=primary_direction(metric) > 0, nulls_last=True))
        best: dict = {}
        for r in ranked.iter_rows(named=True):
            best.setdefault(families.get((dataset, r["model"], r["method"]), "unknown"), r)
        out[dataset] = (metric, ranked, best)
    return out


def warnings_of(runs: pl.DataFrame, dataset: str, r: dict) -> str:
    group = runs.filter((pl.col("dataset") == dataset) & (pl.col("model") == r["model"])
                        & (pl.col("method") == r["method"]))
    return ", ".join(n for n in group_notes(group).split(", ") if n.startswith("⚠"))


def headline_table(summary: pl.DataFrame, runs: pl.DataFrame, primary=PRIMARY) -> str:
    """Rows: the method families; columns: the datasets; a cell: the family's best method there with its value
    (mean ± sd over seeds, interval), the dataset's best in bold."""
    best = family_best(summary, runs, primary)
    present = {f for _, _, b in best.values() for f in b}
    order = [f for f in FAMILY_ORDER if f in present] + sorted(present - set(FAMILY_ORDER))
    header = ["family"] + [f"{d} ({metric_name(m)})" for d, (m, _, _) in best.items()]
    rows = []
    for family in order:
        cells = [FAMILY_ROWS.get(family, family)]
        for dataset, (_, ranked, of_family) in best.items():
            r = of_family.get(family)
            if r is None:
                cells.append("not run")
                continue
            cell = f"{label(r['method'], r['model'])}: {value_cell(r)}"
            warning = warnings_of(runs, dataset, r)
            cell += f" {warning}" if warning else ""
            cells.append(f"**{cell}**" if r == ranked.row(0, named=True) else cell)
        rows.append(cells)
    return to_markdown([("table", header, rows)]).strip()


def subset_note(runs: pl.DataFrame) -> str:
    """Which families were scored on a fixed subset of the test rows (`test_subset`), if any."""
    if not {"n_test", "family"} <= set(runs.columns):
        return ""
    full = runs.group_by("dataset").agg(pl.col("n_test").max().alias("all_rows"))
    part = runs.join(full, on="dataset").filter(pl.col("n_test") < pl.col("all_rows"))
    names = [FAMILY_NAMES.get(f, f) for f in FAMILY_ORDER if f in set(part["family"].to_list())]
    if not names:
        return ""
    return f" {' and '.join(names).capitalize()} {'is' if len(names) == 1 else 'are'} scored on a fixed subset of the test rows."


def provenance(kept: Kept, what: str = "full study") -> str:
    """'The kept full study: N runs of commit X (config Y), …' with the protocol it ran under."""
    commit = study_commit(kept)
    runs = kept.runs.filter(~pl.col("method").str.ends_with(GENERATED))
    config = (kept.time or {}).get("config")
    several = "git_commit" in runs.columns and runs["git_commit"].drop_nulls().n_unique() > 1
    commits = (f"commits {commits_text(runs)}" if several   # runs added later at another commit
               else f"commit `{short(commit) if commit else 'unknown'}`")
    text = (f"The kept {what} (`{kept.folder.relative_to(REPO) if kept.folder.is_relative_to(REPO) else kept.folder}/`): "
            f"{runs.height} runs of {commits}{f' (config `{config}`)' if config else ''}")
    if protocol_of(commit) == "previous":
        return (text + f". **These are the previous protocol's results**: the commit predates the current "
                f"protocol (`{PROTOCOL_SINCE}` on), and no full study under it has been kept yet.")
    return text + "."


def headline_block(kept: Kept) -> str:
    confidence = kept.summary["confidence"][0] if "confidence" in kept.summary.columns else None
    interval = f"the {confidence:.0%} interval" if confidence is not None else "the interval"
    caption = (f"Per dataset, the best method of each family by the primary metric: the mean over seeds (± their "
               f"standard deviation where there are several) and {interval} of a bootstrap over seeds and test "
               f"rows; the dataset's best in bold.{subset_note(kept.runs)} Every method, the paired gaps and "
               f"the costs: [docs/results.md](docs/results.md) and the report, "
               f"[docs/results/report.md](docs/results/report.md).")
    return "\n\n".join([provenance(kept), headline_table(kept.summary, kept.runs), caption]) + "\n"


def measured(kept: Kept | None, log: str) -> str:
    """A study's measured wall time, or 'not yet measured' where its log is absent."""
    t = kept.time if kept is not None else None
    if t is None:
        return f"not yet measured (no `{log}`)"
    text = f"{duration(t['wall_s'])} on {t.get('cpu', 'an unknown CPU')}"
    text += f", {t['cores']} cores" if "cores" in t else ""
    text += f" (`{log}`)"
    if t.get("exit_status"):
        text += f", ended with exit status {t['exit_status']}"
    if protocol_of(t.get("commit")) == "previous":
        config = f" with `{t['config']}`" if "config" in t else ""
        text += f"; that study ran at `{short(t['commit'])}`{config}, before the current protocol"
    for extra in kept.added:
        text += (f", then {duration(extra['wall_s'])} for the jobs added at `{short(extra.get('commit', '?'))}` "
                 f"(`{extra['log'].relative_to(REPO).as_posix() if extra['log'].is_relative_to(REPO) else extra['log']}`)")
    if kept.added:
        text += f": {duration(t['wall_s'] + sum(extra['wall_s'] for extra in kept.added))} in all"
    return text


def commands_block(full: Kept, quick: Kept | None) -> str:
    rows = [["`make run`", "the quick study (`config/config.yaml`): the full protocol sized down, for a first look",
             measured(quick, "docs/results/quick/study_time.log")],
            ["`make study`", "the full protocol (`config/study.yaml`), the study whose kept results are above",
             measured(full, "docs/results/study_time.log")]]
    return to_markdown([("table", ["command", "what it runs", "measured time"], rows)])


# ---- docs/results.md: every method, the paired comparisons -------------------------------------------------------

def ranking_block(kept: Kept) -> str:
    """Per dataset every method ranked by the primary metric, its freely generated answers beside it."""
    blocks = []
    for dataset, (metric, ranked, _) in family_best(kept.summary, kept.runs).items():
        families = families_of(kept.runs)
        generated = kept.summary.filter((pl.col("dataset") == dataset) & (pl.col("metric") == metric))
        rows = []
        for r in ranked.iter_rows(named=True):
            gen = generated.filter((pl.col("model") == r["model"]) & (pl.col("method") == r["method"] + GENERATED))
            rows.append([r["method"], r["model"], FAMILY_NAMES.get(families.get((dataset, r["model"], r["method"])), "?"),
                         str(r["n_seeds"]), value_cell(r), value_cell(gen.row(0, named=True)) if gen.height else "",
                         group_notes(kept.runs.filter((pl.col("dataset") == dataset) & (pl.col("model") == r["model"])
                                                      & (pl.col("method") == r["method"])))])
        blocks += [("h3", f"{dataset} ({metric_name(metric)})"),
                   table(["method", "model", "family", "seeds", "value", "generated answers", "notes"], rows)]
    return to_markdown(blocks)


QUESTIONS = [  # (question, pairs a − b), in the order docs/results.md asks them; a pair not compared is left out
    ("Does training the encoder beat the dictionary, the bag of words and the frozen encoder? (Wang 2024)",
     [("full", "lm_dictionary"), ("full", "learned_dictionary"), ("full", "tfidf"), ("full", "tfidf_1k"),
      ("full", "head"), ("head_all", "head")]),
    ("Which encoder strategy? (the 4-bit base alone: lora − qlora, trained at the same rate)",
     [("full", "top_k"), ("full", "lora"), ("lora", "qlora")]),
    ("Do more demonstrations, better ones, or fine-tuning help the generative model? (Fatemi & Hu 2023)",
     [("llm_k10", "llm_k1"), ("llm_k5_similar", "llm_k5"), ("llm_k5_balanced", "llm_k5"),
      ("llm_k5_per_query", "llm_k5"), ("llm_lora", "llm_k0"), ("llm_lora", "llm_k5"), ("llm_lora", "llm_qlora"),
      ("full", "llm_lora")]),
]


def comparison_row(c: dict, second: dict | None) -> list[str]:
    if c["ci_low"] is None or c["ci_high"] is None:
        resolved = "–"
    else:
        resolved = "yes" if c["ci_low"] > 0 or c["ci_high"] < 0 else "no (the interval includes 0)"
    relative = f"{fmt_pct(c['relative_gain_pct'])} {fmt_ci(c['relative_ci_low'], c['relative_ci_high'], 1)}".strip()
    other = "" if second is None else f"{fmt_pct(second['relative_gain_pct'])} {metric_name(second['metric'])}"
    return [c["dataset"], f"{c['a']} − {c['b']}", f"{fmt(c['difference'])} {fmt_ci(c['ci_low'], c['ci_high'])}".strip(),
            relative, other, resolved, fmt_p(c["mcnemar_p"]), str(c["n_test"])]


def comparisons_block(kept: Kept) -> str:
    """The paired differences comparisons.csv holds, grouped by the question each answers."""
    c, blocks = kept.comparisons, []
    if c is None:
        return "No paired comparisons kept (`comparisons.csv`).\n"
    header = ["dataset", "difference", "value [CI]", "relative gain [CI]", "relative, MSE", "resolved",
              "McNemar p", "test rows"]
    for question, pairs in QUESTIONS:
        rows = []
        for a, b in pairs:
            for dataset in c["dataset"].unique(maintain_order=True).to_list():
                metric = PRIMARY.get(c.filter(pl.col("dataset") == dataset)["task"][0])
                pick = c.filter((pl.col("dataset") == dataset) & (pl.col("a") == a) & (pl.col("b") == b))
                main = pick.filter(pl.col("metric") == metric)
                if main.height:
                    mse = pick.filter(pl.col("metric") == "mse")
                    rows.append(comparison_row(main.row(0, named=True),
                                               mse.row(0, named=True) if metric == "r2" and mse.height else None))
        if rows:
            blocks += [("p", f"**{question}**"), table(header, rows)]
    return to_markdown(blocks)


# ---- docs/performance.md: measured times ---------------------------------------------------------------------------

def times_block(repo: Path = REPO) -> str:
    """Every kept `make timed-run` log: what ran, where, how long, and the estimate printed before it."""
    kept = repo / "docs" / "results"
    logs = [("full study", kept / "study_time.log"),
            *[("jobs added to the full study", p) for p in sorted(kept.glob("study_time_added*.log"))],
            ("quick study", kept / "quick" / "study_time.log"),
            ("AVX2-only run (`EMULATE_AVX2=1`)", kept / "avx2" / "study_time.log")]
    rows = []
    for what, path in logs:
        t = study_time(path)
        log = path.relative_to(repo).as_posix()
        if t is None:
            rows.append([what, f"`{log}`: not yet measured", "", "", "", "", ""])
            continue
        cpu = t.get("user_s", 0) + t.get("system_s", 0)
        estimate = f"{duration(t['estimate_s'])} ({t['estimate_s'] / t['wall_s']:.2f}× measured)" if "estimate_s" in t else ""
        protocol = {"previous": "previous", "current": "current"}.get(protocol_of(t.get("commit"), repo), "?")
        rows.append([what, f"`{log}`: `{short(t.get('commit', '?'))}`, `{t.get('config', '?')}` ({protocol} protocol)",
                     f"{t.get('cpu', '?')}, {t.get('cores', '?')} cores", duration(t["wall_s"]),
                     duration(cpu) if cpu else "", f"{t['peak_rss_kb'] / 1024 ** 2:.1f} GB" if "peak_rss_kb" in t else "",
                     estimate])
    header = ["study", "log: commit, config", "machine", "wall time", "CPU time", "peak memory (one process)",
              "estimate printed before it"]
    return to_markdown([table(header, rows)])


BENCH_FIGURES = [  # (key in bench/results/latest.json, what it is, unit)
    ("avx2_pairs_study_ratio", "AVX2-only / native time, the study's torch runs side by side, weighted by their share (k)", "×"),
    ("avx2_pairs_encoder_ratio_max", "… the slowest encoder fine-tuning method (k)", "×"),
    ("avx2_pairs_icl_ratio_max", "… the slowest prompting method (k)", "×"),
    ("avx2_pairs_generative_ratio_max", "… the slowest generative fine-tuning method (k)", "×"),
    ("qlora_step_ratio_native", "QLoRA / LoRA step time on this CPU (h)", "×"),
    ("qlora_step_ratio_avx2", "QLoRA / LoRA step time as an AVX2-only CPU, 4-bit base dequantised once (h)", "×"),
    ("attention_auto_training_speedup", "`attention: auto` (eager kernels in training) against SDPA, the study's training runs (l)", "×"),
    ("study_estimate_ratio", "the printed estimate / the measured time of the kept study (g)", "×"),
    ("noop_rerun_s", "a second `make run` on a finished study, nothing to do (f)", " s"),
]


def bench_block(repo: Path = REPO) -> str:
    path = repo / "bench" / "results" / "latest.json"
    if not path.exists():
        return "No benchmark results kept (`make bench` writes `bench/results/latest.json`).\n"
    bench = json.loads(path.read_text())
    rows = [[f"`{key}`", what, f"{bench[key]:.2f}{unit}"] for key, what, unit in BENCH_FIGURES
            if isinstance(bench.get(key), (int, float))]
    machine = bench.get("machine", {})
    head = (f"From `bench/results/latest.json` ({bench.get('date', '?')[:10]}, {machine.get('cpu', '?')}, "
            f"{machine.get('cpu_count', '?')} cores; every figure with its workload: "
            f"[bench/results/latest.md](../bench/results/latest.md)).")
    return to_markdown([("p", head), table(["figure", "what", "value"], rows)])


# ---- docs/protocol.md: the two studies' sizes ----------------------------------------------------------------------

ENCODERS = ("full", "top_k", "lora", "qlora")
PROMPTING = "every prompting method"   # in SIZES: the setting is read from each method the registry calls prompting
SIZES = [  # (what, the methods it is read from — None: the study itself —, key, shown as)
    ("seeds", None, "seeds", lambda v: ", ".join(map(str, v))),
    ("encoder training rows", ENCODERS + ("head",), "max_train_samples", str),
    ("encoder optimizer steps (at least) × batch", ENCODERS, ("min_steps", "batch_size"), lambda v: f"{v[0]} × {v[1]}"),
    ("encoder dev rows for trials and early stopping", ENCODERS, "max_dev_samples", lambda v: "all" if v is None else str(v)),
    ("`full`'s learning-rate grid", ("full",), "learning_rate_grid", lambda v: ", ".join(f"{x:g}" for x in v)),
    ("times a learning-rate grid may grow past its edge", ("full", "top_k", "lora", "llm_lora"), "grid_extensions", str),
    ("seeds every learning rate is tried on", ("full", "top_k", "lora", "llm_lora"), "select_seeds", str),
    ("generative fine-tuning rows, steps × batch", ("llm_lora", "llm_qlora"),
     ("max_train_samples", "min_steps", "batch_size"), lambda v: f"{v[0]}, {v[1]} × {v[2]}"),
    ("prompting: dev rows for the answer words and scoring rule", PROMPTING, "max_dev_samples",
     lambda v: "all" if v is None else str(v)),
]


def size_cell(config: dict, methods, key, show) -> str:
    """The setting as the listed methods the study runs have it: one value when they agree, else each one's."""
    if methods is None:
        return show(config[key])
    run = {r.method for r in tbconfig.runs(config)}
    chosen = {n: m for n, m in config["methods"].items() if n in run
              and (families.strategy(m["strategy"]).approach == "prompting" if methods == PROMPTING
                   else n in methods)}
    values = {n: show(tuple(m.get(k) for k in key) if isinstance(key, tuple) else m.get(key))
              for n, m in chosen.items()}
    if not values:
        return "not run"
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return "; ".join(f"`{n}` {v}" for n, v in values.items())


def sizes_block(repo: Path = REPO) -> str:
    """The quick and the full study side by side, read from the configs (defaults filled in by the schema)."""
    studies = [("quick (`make run`)", repo / "config" / "config.yaml"), ("full (`make study`)", repo / "config" / "study.yaml")]
    configs = [tbconfig.load(path) for _, path in studies]
    rows = [[what] + [size_cell(c, methods, key, show) for c in configs] for what, methods, key, show in SIZES]
    subsets = [", ".join(f"{d} {ds['test_subset']['size']}" for d, ds in c["datasets"].items() if ds.get("test_subset"))
               for c in configs]
    rows.append(["test rows prompting and generative fine-tuning are scored on"] + subsets)
    rows.append(["runs (dataset × model × method × seed)"] + [str(len(tbconfig.runs(c))) for c in configs])
    return to_markdown([("table", ["setting"] + [name for name, _ in studies], rows)])


# ---- the blocks, and rewriting them in place -------------------------------------------------------------------

def blocks(repo: Path = REPO) -> dict:
    """NAME → a function making its text: each reads only what it needs, so one broken input fails one block."""
    results = repo / "docs" / "results"
    full = lambda: read_kept(results)  # noqa: E731
    quick = lambda: read_kept(results / "quick") if (results / "quick").exists() else None  # noqa: E731
    return {
        "headline": lambda: headline_block(full()),
        "commands": lambda: commands_block(full(), quick()),
        "provenance": lambda: provenance(full()) + "\n",
        "ranking": lambda: ranking_block(full()),
        "comparisons": lambda: comparisons_block(full()),
        "quick-ranking": lambda: ranking_block(quick()) if quick() and quick().summary is not None
        else "The quick study has not been kept yet (`make keep-results KEEP=docs/results/quick`).\n",
        "times": lambda: times_block(repo),
        "bench": lambda: bench_block(repo),
        "sizes": lambda: sizes_block(repo),
    }


def refresh(text: str, repo: Path = REPO) -> str:
    """The text with every generated block made again (an unknown block name is an error)."""
    makers = blocks(repo)

    def again(match: re.Match) -> str:
        name = match.group("name")
        if name not in makers:
            raise KeyError(f"no generator for block '{name}' (known: {', '.join(makers)})")
        return f"<!-- generated:{name} -->\n{makers[name]()}<!-- /generated:{name} -->"
    return BEGIN.sub(again, text)


def documents(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make README.md's and docs/*.md's generated blocks again.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a block is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path in documents():
        text = path.read_text()
        new = refresh(text)
        if new != text:
            stale.append(path.relative_to(REPO).as_posix())
            if not args.check:
                path.write_text(new)
    print(("out of date: " if args.check else "rewritten: ") + (", ".join(stale) or "none"))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
