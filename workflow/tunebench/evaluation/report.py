"""The comparison report: report.md and a self-contained report.html from the aggregated tables.

Per dataset: the methods ranked by the primary metric with their CIs, the published anchors in their own
table, the paired comparisons and the relative gains (Wang 2024 style), a cost table, the plots, and the
strongest words of the learned dictionaries. Then the anchors that sit beside no dataset of ours, and what was
capped. Figures are PNG files in `figures/` next to report.md (linked from the Markdown, flagged for
Snakemake's report) and embedded as base64 in the HTML, which therefore makes no request of its own.
"""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import yaml  # noqa: E402

from tunebench import files  # noqa: E402
from tunebench.families import NO_MODEL  # noqa: E402
from tunebench.evaluation.metrics import primary_direction  # noqa: E402

METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "mcc": "MCC",
                "mse": "MSE", "rmse": "RMSE", "mae": "MAE", "r2": "R²", "pearson": "Pearson r",
                "cosine": "cosine", "unparseable_rate": "unparseable rate"}
# The second number of a relative-gain headline ("+27% R², −46% MSE"), beside the primary metric.
SECOND_METRIC = {"classification": "accuracy", "regression": "mse"}
FEW_SHOT = {"embedding_zero_shot", "embedding_few_shot", "icl"}


def build_report(runs_csv, summary_csv, comparisons_csv, anchors_yaml, report_md, report_html,
                 primary_metric="macro_f1", dictionary_words: int = 15, strata_csv=None, readme_md=None,
                 config_file: str | None = None) -> None:
    """The report (Markdown, rendered once more as HTML) and, if `readme_md` is given, the short results table
    that README.md carries verbatim."""
    runs = _read(runs_csv)
    summary = _read(summary_csv)
    comparisons = _read(comparisons_csv)
    strata = _read(strata_csv) if strata_csv is not None else None
    anchors_doc = yaml.safe_load(Path(anchors_yaml).read_text()) or {}
    anchors = anchors_doc.get("anchors", [])
    figures = Path(report_md).parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)

    blocks = intro(summary, anchors_doc.get("note", ""))
    shown_anchors: set[int] = set()
    for dataset in summary["dataset"].unique(maintain_order=True).to_list():
        task = summary.filter(pl.col("dataset") == dataset)["task"][0]
        primary = primary_metric.get(task) if isinstance(primary_metric, dict) else primary_metric
        context = Dataset(dataset, task, primary, runs, summary, comparisons, figures, strata)
        matching = [i for i, a in enumerate(anchors) if context.matches(a)]
        shown_anchors.update(matching)
        blocks += context.section([anchors[i] for i in matching], dictionary_words)
    blocks += other_anchors([a for i, a in enumerate(anchors) if i not in shown_anchors])
    blocks += dev_choices(runs)
    blocks += caps(runs)
    markdown = to_markdown(blocks)
    files.write_text(report_md, markdown)
    files.write_text(report_html, to_html(markdown, figures))
    if readme_md is not None:
        files.write_text(readme_md, readme_table(summary, runs, primary_metric, config_file))


def _read(path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema_length=None)


# ---- text ---------------------------------------------------------------------------------------------------

def intro(summary: pl.DataFrame, anchors_note: str) -> list:
    confidence = summary["confidence"].drop_nulls()
    level = f"{confidence[0]:.0%}" if len(confidence) else "95%"
    many = summary.filter(pl.col("n_seeds") > 1).height > 0
    how = (f"Intervals are {level} percentile bootstrap intervals with a fixed seed. With one seed they resample "
           "the test examples. ")
    how += ("With several seeds (n_seeds > 1) they resample seeds as well as test examples (a two-level "
            "bootstrap), so they hold both training randomness and test-set sampling; the value shown is the "
            "mean over seeds ± its sd. " if many else "Every method here ran with one seed, so the intervals "
            "hold test-set sampling only, not training randomness. ")
    how += clusters_text(summary)
    how += ("Paired comparisons resample the same test examples for both methods; McNemar's p is the exact "
            "binomial test on the discordant examples: with several seeds on either side, the largest p over "
            "every pair of their seeds (a's seeds × b's; comparisons.csv, column mcnemar_pairs).")
    return [("h1", "tunebench: which adaptation strategy wins, by how much, and at what cost"),
            ("p", how),
            ("p", "Published figures appear in their own tables, never averaged with ours. " + anchors_note)]


CLUSTER_NAMES = {"group": "group (the table's `group` column)", "duplicates": "near-duplicate unit"}


def clusters_text(summary: pl.DataFrame) -> str:
    """Which datasets' intervals resample clusters of test examples rather than examples (config key cluster)."""
    if "resampling_unit" not in summary.columns:
        return ""
    clustered = (summary.filter(pl.col("resampling_unit").is_not_null() & (pl.col("resampling_unit") != "row"))
                 .unique("dataset", maintain_order=True))
    if clustered.is_empty():
        return ""
    which = ", ".join(f"{d} by {CLUSTER_NAMES.get(u, u)}"
                      for d, u in zip(clustered["dataset"].to_list(), clustered["resampling_unit"].to_list()))
    return (f"Where test examples are not independent they are resampled in clusters, whole clusters at a time "
            f"(config key cluster; resampling_unit in summary.csv and comparisons.csv): {which}. ")


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{round(x, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.000"


def fmt_ci(low, high, digits: int = 3) -> str:
    return "" if low is None or np.isnan(low) else f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_pct(x) -> str:
    if x is None or np.isnan(x):
        return "–"
    return f"{'+' if x >= 0 else '−'}{abs(x):.1f}%"


def fmt_int(x) -> str:
    return "–" if x is None or np.isnan(x) else f"{x:,.0f}"


def label(method: str, model: str) -> str:
    return method if model == NO_MODEL else f"{method} ({model})"


class Dataset:
    """Everything the report says about one dataset."""

    def __init__(self, name, task, primary, runs, summary, comparisons, figures: Path, strata=None):
        self.name, self.task, self.primary, self.figures = name, task, primary, figures
        self.strata = None if strata is None else strata.filter(pl.col("dataset") == name)
        self.runs = runs.filter(pl.col("dataset") == name)
        self.summary = summary.filter(pl.col("dataset") == name)
        self.comparisons = comparisons.filter(pl.col("dataset") == name)
        self.metrics = self.summary["metric"].unique(maintain_order=True).to_list()
        if primary not in self.metrics:
            primary = self.primary = self.metrics[0]
        self.direction = primary_direction(primary)
        ranked = self.summary.filter(pl.col("metric") == primary).sort("mean", descending=self.direction > 0)
        self.ranked = ranked  # one row per (model, method), best first

    def matches(self, anchor: dict) -> bool:
        loaders = set(self.runs["loader"].drop_nulls().to_list()) if "loader" in self.runs.columns else set()
        names = {s.strip() for s in str(anchor.get("dataset", "")).split(",")}
        return bool(names & ({self.name} | loaders))

    def section(self, anchors: list[dict], n_words: int) -> list:
        name = METRIC_NAMES.get(self.primary, self.primary)
        blocks = [("h2", f"{self.name} ({self.task}; ranked by {name})")]
        blocks += self.methods_table()
        if anchors:
            blocks += [("h3", "Published figures on this dataset"),
                       ("p", "“same split” marks a figure whose split this study rebuilt for this dataset "
                             "(data/reference/published.yaml names each figure's split method); every other "
                             "figure was measured on a split of its own and compares only in order of "
                             "magnitude."),
                       anchor_table(anchors, self.split_methods(), self.same_family)]
        blocks += self.per_class_table()
        blocks += self.prompting_vs_finetuning()
        blocks += self.comparison_blocks()
        blocks += self.parse_rules()
        blocks += self.strata_table()
        blocks += self.cost_table()
        blocks += self.plots()
        blocks += self.selection_plots()
        blocks += self.dictionary_words(n_words)
        return blocks

    # -- tables
    def methods_table(self) -> list:
        metrics = [self.primary] + [m for m in self.metrics if m != self.primary]
        metrics = [m for m in metrics if not m.startswith(("as_neutral_", "dropped_"))]
        header = ["#", "method", "model", "seeds", "test rows"] + [METRIC_NAMES.get(m, m) for m in metrics] + \
                 ["notes"]
        rows = []
        for rank, r in enumerate(self.ranked.iter_rows(named=True), 1):
            cells = [str(rank), r["method"], r["model"], str(r["n_seeds"]), self.test_rows(r["model"], r["method"])]
            for m in metrics:
                s = self.summary.filter((pl.col("model") == r["model"]) & (pl.col("method") == r["method"])
                                        & (pl.col("metric") == m))
                cells.append(self.value_cell(s.row(0, named=True)) if s.height else "–")
            rows.append(cells + [self.notes(r["model"], r["method"])])
        legend = ("⚠ collapsed: some seed's run answered one class for at least 90% of the test rows although "
                  "gold has less than 70% of that class — its score measures a bias of the prompt or the model, "
                  "not its strategy. ⚠ did not learn: some seed's run did not beat the trivial baseline (majority class or "
                  "training mean) on dev, or its training loss stayed flat — not a fair attempt of its strategy. "
                  "edge: the setting chosen on dev sits on an edge of the values tried (a wider grid might do "
                  "better; \"growth bound hit\": the grid grew past its edge as often as allowed). "
                  "Test rows below the others' mark methods scored on the dataset's fixed test subset; compare "
                  "them with the others in the paired comparisons, which use the shared rows.")
        return [("h3", "Methods"), ("table", header, rows), ("p", legend)]

    def group_runs(self, model: str, method: str) -> pl.DataFrame:
        return self.runs.filter((pl.col("model") == model) & (pl.col("method") == method))

    def test_rows(self, model: str, method: str) -> str:
        runs = self.group_runs(model, method)
        return fmt_int(runs["n_test"].max()) if "n_test" in runs.columns and runs.height else "–"

    def notes(self, model: str, method: str) -> str:
        return group_notes(self.group_runs(model, method))

    def same_family(self, anchor: dict) -> str:
        """Our runs of the anchor's family (its `ours`: strategies, "icl k=0" for a given k) on its metric, every
        matching method with its mean over seeds — none picked by its test score."""
        metric = anchor.get("metric")
        if not anchor.get("ours") or metric not in self.metrics:
            return ""
        wanted = [str(entry).split() for entry in anchor["ours"]]
        kind = self.runs.unique(["model", "method"]).select(
            "model", "method", "strategy", *(["k"] if "k" in self.runs.columns else []))
        values = []
        full_test = self.runs["n_test"].max() if "n_test" in self.runs.columns else None
        for r in self.summary.filter(pl.col("metric") == metric).iter_rows(named=True):
            found = kind.filter((pl.col("model") == r["model"]) & (pl.col("method") == r["method"])).row(0, named=True)
            for strategy, *k in wanted:
                if found["strategy"] == strategy and (not k or str(found.get("k")) == k[0].removeprefix("k=")):
                    rows = self.test_rows(r["model"], r["method"].removesuffix("-gen"))   # -gen: same run
                    # A method scored on the fixed test subset: the same split, fewer of its rows.
                    subset = f" ({rows} of {fmt_int(full_test)} test rows)" if rows != fmt_int(full_test) else ""
                    values.append(f"{label(r['method'], r['model'])} {fmt(r['mean'])}{subset}")
        return ", ".join(values)

    def split_methods(self) -> set[str]:
        return set(self.runs["split_method"].drop_nulls().to_list()) if "split_method" in self.runs.columns \
            else set()

    # -- Fatemi & Hu's question
    def approach(self, r: dict) -> str | None:
        """Which side of "fine-tuning vs prompting" a run is on (None: a baseline)."""
        strategy, method = r["strategy"], r["method"]
        if strategy == "icl":
            kind = "generated answers" if method.endswith("-gen") else "label scoring"
            if not r.get("k"):
                return f"prompting, zero-shot ({kind})"
            return f"prompting, {r.get('selection') or 'random'} demonstrations ({kind})"
        if strategy.startswith("generative_"):
            return "fine-tuned generative" + (" (generated answers)" if method.endswith("-gen") else "")
        if r["family"] == "encoder":
            return "fine-tuned encoder"
        return None

    def prompting_vs_finetuning(self) -> list:
        groups = self.runs.unique(["model", "method"], maintain_order=True)
        members = [(self.approach(r), r) for r in groups.iter_rows(named=True)]
        members = [(a, r) for a, r in members if a is not None]
        if not any(a.startswith("prompting") for a, _ in members):
            return []
        stats = {(r["model"], r["method"]): r for r in
                 self.summary.filter(pl.col("metric") == self.primary).iter_rows(named=True)}
        name = METRIC_NAMES.get(self.primary, self.primary)
        header = ["approach", "method", "model", "k", "seeds", "test rows", name, "scoring (dev choice)",
                  f"{name} by per-token mean, uncalibrated"]
        rows = []
        for approach, r in sorted(members, key=lambda m: (m[0], m[1].get("k") or 0)):
            s = stats.get((r["model"], r["method"]))
            if s is not None:
                rows.append([approach, r["method"], r["model"], "" if r["strategy"] != "icl" else str(r.get("k") or 0),
                             str(s["n_seeds"]), self.test_rows(r["model"], r["method"]), self.value_cell(s),
                             *self.scoring_cells(r["model"], r["method"])])
        text = ("Fatemi & Hu's question — does fine-tuning beat zero- and few-shot prompting of an instruction-"
                "tuned model, and do more demonstrations help? — on this dataset. Demonstrations come from the "
                "training split only (drawn at random once per seed, or the most similar training texts per test "
                "text). Label scoring compares the label words' log-likelihoods by a scoring rule (sum, per-token "
                "mean, per-byte, contextual calibration or PMI) that each prompting run chose, with its answer "
                "words, on a fixed dev sample; the last column gives the same runs' test score under the "
                "uncalibrated per-token mean, so the reader sees how much of the gap the scoring rule explains. "
                "Generated answers are parsed, an unparseable one counts as wrong (other rules below). The paired "
                "differences with their intervals are in the comparisons that follow, on the shared test rows.")
        return [("h3", "Fine-tuning vs prompting"), ("p", text), ("table", header, rows)]

    def scoring_cells(self, model: str, method: str) -> list[str]:
        """The scoring rules the runs chose (with their answer words), and their mean test metric under the
        per-token mean rule ('–' where the run recorded none: a fixed rule, or generated answers)."""
        if method.endswith("-gen"):
            return ["generated", "–"]
        runs = self.group_runs(model, method)
        chosen = []
        for column in ("scoring", "verbaliser"):
            if column in runs.columns:
                chosen.append("/".join(sorted(set(runs[column].drop_nulls().cast(pl.String).to_list()))))
        uncalibrated = f"{self.primary}_mean"
        value = fmt(runs[uncalibrated].mean()) if uncalibrated in runs.columns and \
            runs[uncalibrated].null_count() < runs.height else "–"
        return [", ".join(c for c in chosen if c) or "–", value]

    def per_class_table(self) -> list:
        """F1 of every class per method (mean over seeds), with the share of the most predicted class: where a
        macro-F1 comes from, and which methods answer one class for nearly everything."""
        columns = [c for c in self.runs.columns if c.startswith("f1_")]
        if self.task != "classification" or not columns:
            return []
        header = ["method", "model"] + [f"F1 {c.removeprefix('f1_')}" for c in columns] + \
                 ["share of the most predicted class", "notes"]
        rows = []
        for r in self.ranked.iter_rows(named=True):
            runs = self.group_runs(r["model"], r["method"])
            cells = [fmt(runs[c].mean()) if runs[c].null_count() < runs.height else "–" for c in columns]
            share = fmt(runs["top_class_share"].mean()) if "top_class_share" in runs.columns and \
                runs["top_class_share"].null_count() < runs.height else "–"
            rows.append([r["method"], r["model"], *cells, share, self.notes(r["model"], r["method"])])
        return [("h3", "Per-class F1"), ("table", header, rows)]

    def parse_rules(self) -> list:
        """Generated answers under the three parse-failure rules, beside their unparseable rate."""
        if self.task != "classification":
            return []
        by = {(r["model"], r["method"], r["metric"]): r["mean"] for r in self.summary.iter_rows(named=True)}
        generated = [(m, meth) for (m, meth, metric) in by if metric == "unparseable_rate"]
        if not generated:
            return []
        metric = self.primary
        header = ["method", "model", "unparseable rate", f"{METRIC_NAMES.get(metric, metric)}: count as wrong",
                  "map to neutral (FinGPT)", "drop (PIXIU)"]
        rows = [[meth, model, fmt(by.get((model, meth, "unparseable_rate"))), fmt(by.get((model, meth, metric))),
                 fmt(by.get((model, meth, f"as_neutral_{metric}"))), fmt(by.get((model, meth, f"dropped_{metric}")))]
                for model, meth in generated]
        text = ("Free-generation answers that name no label: ours count them as wrong; FinGPT's benchmark maps them "
                "to neutral; PIXIU/FinBen-style scoring leaves them out (so its metric is over the parsed answers "
                "only). Published generative figures follow their authors' rule.")
        return [("h3", "Unparseable answers under three scoring rules"), ("p", text), ("table", header, rows)]

    def strata_table(self) -> list:
        if self.strata is None or self.strata.is_empty():
            return []
        strata = self.strata.filter(pl.col("metric") == self.primary)
        levels = strata.unique("agreement", maintain_order=True).sort("agreement", descending=True)
        sizes = dict(zip(levels["agreement"].to_list(), levels["n_test"].to_list()))
        header = ["method", "model"] + [f"{level} (n = {sizes[level]})" for level in sizes]
        rows = []
        for r in self.ranked.iter_rows(named=True):
            mine = strata.filter((pl.col("model") == r["model"]) & (pl.col("method") == r["method"]))
            values = dict(zip(mine["agreement"].to_list(), mine["mean"].to_list()))
            if values:
                rows.append([r["method"], r["model"]] + [fmt(values.get(level)) for level in sizes])
        text = (f"{METRIC_NAMES.get(self.primary, self.primary)} on the test sentences of each annotator-agreement "
                "level (a sentence's highest level; means over seeds; strata.csv has every metric). Errors on "
                "sentences annotators disagreed on are partly label noise.")
        return [("h3", "By annotator agreement"), ("p", text), ("table", header, rows)]

    @staticmethod
    def value_cell(s: dict) -> str:
        value = fmt(s["mean"]) + (f" ± {fmt(s['sd'])}" if s["n_seeds"] > 1 and s["sd"] is not None else "")
        return f"{value} {fmt_ci(s['ci_low'], s['ci_high'])}".strip()

    def comparison_blocks(self) -> list:
        if self.comparisons.is_empty():
            return []
        name = METRIC_NAMES.get(self.primary, self.primary)
        header = ["a", "b", f"{name} a", f"{name} b", "a − b [CI]", "relative gain [CI]", "test examples"]
        if self.task == "classification":
            header.append("McNemar p")
        rows, gains = [], []
        for (a, ma, b, mb), pair in self.comparisons.group_by(["a", "model_a", "b", "model_b"],
                                                               maintain_order=True):
            by_metric = {r["metric"]: r for r in pair.iter_rows(named=True)}
            r = by_metric.get(self.primary)
            if r is None:
                continue
            row = [label(a, ma), label(b, mb), fmt(r["value_a"]), fmt(r["value_b"]),
                   f"{fmt(r['difference'])} {fmt_ci(r['ci_low'], r['ci_high'])}",
                   f"{fmt_pct(r['relative_gain_pct'])} {self.pct_ci(r)}", str(r["n_test"])]
            if self.task == "classification":
                row.append(fmt_p(r["mcnemar_p"]))
            rows.append(row)
            gains.append(self.gain_sentence(label(a, ma), label(b, mb), by_metric))
        return [("h3", "Paired comparisons (same test examples)"), ("table", header, rows),
                ("h3", "Relative gains"),
                ("p", "As Wang (2024) reports fine-tuning against a dictionary: the change of a over b in percent "
                      "of b, with its paired-bootstrap interval (given only where b's own interval lies above 0; "
                      "otherwise it would be a ratio to noise). Every metric is in comparisons.csv."),
                ("list", gains)]

    @staticmethod
    def pct_ci(r: dict) -> str:
        low, high = r["relative_ci_low"], r["relative_ci_high"]
        return "" if low is None or np.isnan(low) else f"[{fmt_pct(low)}, {fmt_pct(high)}]"

    def gain_sentence(self, a: str, b: str, by_metric: dict) -> str:
        parts = []
        for metric in dict.fromkeys([self.primary, SECOND_METRIC[self.task]]):
            r = by_metric.get(metric)
            name = METRIC_NAMES.get(metric, metric)
            if r is None:
                continue
            if r["relative_gain_pct"] is None or np.isnan(r["relative_gain_pct"]):
                parts.append(f"{name}: no relative gain (b's interval reaches 0; difference "
                             f"{fmt(r['difference'])} {fmt_ci(r['ci_low'], r['ci_high'])})")
            else:
                parts.append(f"{fmt_pct(r['relative_gain_pct'])} {name} {self.pct_ci(r)}".strip())
        return f"{a} vs {b}: " + ", ".join(parts)

    def cost_means(self) -> pl.DataFrame:
        fields = [c for c in ("trainable_params", "total_params", "trainable_fraction", "train_time_s",
                              "eval_time_s", "n_test", "selection_time_s", "peak_rss_mb", "tokens_per_s",
                              "wall_time_s") if c in self.runs.columns]
        numeric = [pl.col(c).cast(pl.Float64, strict=False).mean().alias(c) for c in fields]
        labels = [pl.col(c).cast(pl.String).drop_nulls().unique().sort().str.join("/").alias(c)
                  for c in ("precision", "qlora_path") if c in self.runs.columns]
        return self.runs.group_by(["model", "method"], maintain_order=True).agg(numeric + labels)

    def cost_table(self) -> list:
        costs = {(r["model"], r["method"]): r for r in self.cost_means().iter_rows(named=True)}
        header = ["method", "model", "trainable params", "fraction trainable", "train time (s)",
                  "dev selection (s)", "s per 1,000 test examples", "precision", "peak memory (MB)", "tokens/s",
                  "wall time (s)"]
        rows = []
        for r in self.ranked.iter_rows(named=True):
            c = costs.get((r["model"], r["method"]), {})
            fraction = c.get("trainable_fraction")
            per_1000 = None if not c.get("n_test") or c.get("eval_time_s") is None else \
                1000 * c["eval_time_s"] / c["n_test"]
            precision = c.get("precision") or "–"
            if c.get("qlora_path"):
                precision += f" ({c['qlora_path']})"
            rows.append([r["method"], r["model"], fmt_int(c.get("trainable_params")),
                         "–" if fraction is None else f"{fraction:.3%}", fmt(c.get("train_time_s"), 1),
                         fmt(c.get("selection_time_s"), 1), fmt(per_1000, 1), precision,
                         fmt_int(c.get("peak_rss_mb")), fmt_int(c.get("tokens_per_s")),
                         fmt(c.get("wall_time_s"), 1)])
        text = ("Training time excludes the dev selection of the learning rate, which ran once per method and "
                "dataset (its own column); test time is per 1,000 examples, so full-test and test-subset runs "
                "compare. Precision is the one used (auto resolves to bf16 only where the CPU or GPU has fast "
                "bf16).")
        return [("h3", "Cost (means over seeds)"), ("p", text), ("table", header, rows)]

    # -- plots
    def plots(self) -> list:
        blocks = [("h3", "Plots")]
        blocks.append(self.save(self.plot_by_method(), "by-method",
                                f"{METRIC_NAMES.get(self.primary, self.primary)} by method with its interval."))
        points = self.cost_points()
        for field, what, caption in (
                ("trainable_params", "params", "against trainable parameters (log axis); the line joins the "
                                               "Pareto front (no method is better with fewer parameters)."),
                ("train_time_s", "time", "against training time (log axis); the line joins the Pareto front.")):
            figure = self.plot_vs_cost(points, field)
            if figure is not None:
                blocks.append(self.save(figure, f"vs-{what}",
                                        f"{METRIC_NAMES.get(self.primary, self.primary)} {caption}"))
        figure = self.plot_k_shot()
        if figure is not None:
            blocks.append(self.save(figure, "k-shot", "Few-shot curve: metric against k (shots per class for "
                                                      "embedding few-shot, demonstrations for ICL); k = 0 is "
                                                      "zero-shot."))
        return blocks

    def save(self, fig, kind: str, caption: str, method: str = "all"):
        """figures/<dataset>/<method>/<kind>.png (method "all" for the comparisons), so that `snakemake --report`
        can toggle the figures by dataset and by method."""
        name = f"{self.name}/{method}/{kind}.png"
        path = self.figures / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        return ("figure", name, f"{self.name}: {caption}")

    def selection_plots(self) -> list:
        """One figure per method whose learning rate was chosen on dev: the dev metric of each trial."""
        if "dev_by_value" not in self.runs.columns:
            return []
        # A rate borrowed from another method (learning_rate_from) is that method's figure already.
        # A `-gen` row is the same run's generated answers: the same trials.
        own = pl.col("learning_rate_from").is_null() if "learning_rate_from" in self.runs.columns else pl.lit(True)
        own = own & ~pl.col("method").str.ends_with("-gen") & pl.col("chosen_on_dev").str.starts_with("learning_rate=")
        chosen = self.runs.filter(pl.col("dev_by_value").is_not_null() & own).unique(["model", "method"],
                                                                                       maintain_order=True)
        blocks = []
        for r in chosen.iter_rows(named=True):
            pairs = sorted((float(lr), float(v)) for lr, v in (item.split(":") for item in r["dev_by_value"].split()))
            best = float(r["chosen_on_dev"].split("=")[1])
            metric = METRIC_NAMES.get(r["selection_dev_metric"], r["selection_dev_metric"] or "dev metric")
            fig, ax = plt.subplots(figsize=(4.5, 3))
            ax.plot([lr for lr, _ in pairs], [v for _, v in pairs], marker="o")
            ax.plot([best], [dict(pairs)[best]], marker="*", markersize=14, linestyle="none", label="chosen")
            ax.set_xscale("log")
            ax.set_xlabel("learning rate")
            ax.set_ylabel(f"dev {metric}")
            ax.set_title(label(r["method"], r["model"]), fontsize=10)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            steps = f" ({fmt_int(r.get('trial_steps'))} steps each)" if r.get("trial_steps") is not None else ""
            blocks.append(self.save(fig, "lr-selection", f"{label(r['method'], r['model'])}: dev {metric} of the "
                                    f"learning-rate trials{steps}; the star is the rate every seed trained at.",
                                    method=r["method"]))
        return [("h3", "Learning-rate selection on dev"), *blocks] if blocks else []

    def plot_by_method(self):
        rows = list(self.ranked.iter_rows(named=True))[::-1]  # best at the top
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
        y = np.arange(len(rows))
        mean = np.array([r["mean"] for r in rows])
        low = np.array([r["mean"] - r["ci_low"] if r["ci_low"] is not None else 0 for r in rows])
        high = np.array([r["ci_high"] - r["mean"] if r["ci_high"] is not None else 0 for r in rows])
        ax.errorbar(mean, y, xerr=[low, high], fmt="o", capsize=3)
        ax.set_yticks(y, [label(r["method"], r["model"]) for r in rows])
        ax.set_xlabel(METRIC_NAMES.get(self.primary, self.primary))
        ax.grid(axis="x", alpha=0.3)
        return fig

    def cost_points(self) -> list[dict]:
        costs = {(r["model"], r["method"]): r for r in self.cost_means().iter_rows(named=True)}
        return [{**costs.get((r["model"], r["method"]), {}), "label": label(r["method"], r["model"]),
                 "value": r["mean"]} for r in self.ranked.iter_rows(named=True)]

    def plot_vs_cost(self, points: list[dict], field: str):
        points = [p for p in points if p.get(field) is not None and not np.isnan(p[field])]
        if not points:
            return None
        floor = 1.0 if field == "trainable_params" else 0.01  # a log axis cannot show 0: drawn at the floor
        x = np.array([max(p[field], floor) for p in points])
        y = np.array([p["value"] for p in points])
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.scatter(x, y)
        for xi, yi, p in zip(x, y, points):
            ax.annotate(p["label"], (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = pareto_front(x, y, self.direction)
        ax.plot(x[front], y[front], "o-", color="tab:red", alpha=0.6, drawstyle="steps-post", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel({"trainable_params": f"trainable parameters (0 drawn at {floor:g})",
                       "train_time_s": f"training time, s (0 drawn at {floor:g})"}[field])
        ax.set_ylabel(METRIC_NAMES.get(self.primary, self.primary))
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        return fig

    def k_shot_points(self) -> pl.DataFrame:
        """(series, k, model, method) for the few-shot runs; zero-shot joins every series of its model."""
        runs = self.runs.filter(pl.col("strategy").is_in(list(FEW_SHOT)))
        rows = []
        for r in runs.unique(["model", "method"], maintain_order=True).iter_rows(named=True):
            if r["strategy"] == "icl":
                k, series = r.get("k") or 0, f"{r['model']} · ICL {r.get('selection') or ''}".strip()
                if r.get("decoding") == "generate" and r["method"].endswith("-gen"):
                    series += " · generated answers"
            else:
                k = (r.get("shots") or 0) if r["strategy"] == "embedding_few_shot" else 0
                series = f"{r['model']} · embedding {r.get('classifier') or 'centroid'}"
            rows.append({"series": series, "k": int(k), "model": r["model"], "method": r["method"],
                         "family": r["strategy"] == "icl", "zero": k == 0})
        # A zero-shot point belongs to every series of its model and family.
        out = []
        for r in rows:
            if r["zero"]:
                out += [{**r, "series": s["series"]} for s in rows
                        if not s["zero"] and s["model"] == r["model"] and s["family"] == r["family"]] or [r]
            else:
                out.append(r)
        return pl.DataFrame(out) if out else pl.DataFrame()

    def plot_k_shot(self):
        points = self.k_shot_points()
        if points.is_empty() or points["k"].n_unique() < 2:  # a single k is no curve
            return None
        stats = self.summary.filter(pl.col("metric") == self.primary).select("model", "method", "mean",
                                                                              "ci_low", "ci_high")
        points = points.join(stats, on=["model", "method"]).sort("series", "k")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (series,), s in points.group_by("series", maintain_order=True):
            low = (s["mean"] - s["ci_low"].fill_null(s["mean"])).to_numpy()
            high = (s["ci_high"].fill_null(s["mean"]) - s["mean"]).to_numpy()
            ax.errorbar(s["k"].to_numpy(), s["mean"].to_numpy(), yerr=[low, high], marker="o", capsize=3,
                        label=series)
        ax.set_xlabel("k")
        ax.set_ylabel(METRIC_NAMES.get(self.primary, self.primary))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return fig

    # -- learned dictionary
    def dictionary_words(self, n: int) -> list:
        runs = self.runs.filter(pl.col("strategy") == "learned_dictionary").sort("seed")
        blocks = []
        for r in runs.unique(["model", "method"], keep="first", maintain_order=True).iter_rows(named=True):
            path = Path(r["run_dir"]) / "dictionary.csv"
            title = f"Strongest words of {label(r['method'], r['model'])} (seed {r['seed']})"
            if not path.exists():
                blocks += [("h3", title), ("p", f"{path} was not found.")]
                continue
            words = pl.read_csv(path)
            blocks += [("h3", title), ("p", "Largest learned weights among words seen in training "
                                            "(weight in brackets)."), strongest_words(words, n)]
        return blocks


def strongest_words(words: pl.DataFrame, n: int):
    """A table with the top n words per class (classification) or per direction (regression)."""
    if "weight" in words.columns:
        columns = {"raises the score": words.filter(pl.col("weight") > 0).sort("weight", descending=True),
                   "lowers the score": words.filter(pl.col("weight") < 0).sort("weight")}
        key = {name: "weight" for name in columns}
    else:
        weights = [c for c in words.columns if c.startswith("weight_")]
        columns = {c.removeprefix("weight_"): words.filter(pl.col(c) > 0).sort(c, descending=True)
                   for c in weights}
        key = {c.removeprefix("weight_"): c for c in weights}
    rows = []
    for i in range(n):
        row = []
        for name, ranked in columns.items():
            if i < ranked.height:
                row.append(f"{ranked['word'][i]} ({ranked[key[name]][i]:+.2f})")
            else:
                row.append("")
        rows.append(row)
    return ("table", list(columns), rows)


def pareto_front(x, y, direction: int) -> np.ndarray:
    """Indices of the points no other point beats with less or equal cost, ordered by cost."""
    order = np.lexsort((-direction * y, x))
    front, best = [], -np.inf
    for i in order:
        if direction * y[i] > best:
            front.append(i)
            best = direction * y[i]
    return np.array(front, dtype=int)


def fmt_p(p) -> str:
    if p is None or np.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def anchor_table(anchors: list[dict], our_splits: set[str] = frozenset(), ours=None):
    """Published figures, each with "same split" where a dataset of ours rebuilt its split and, where `ours`
    (anchor → text) finds them, our runs of the same family on the same metric."""
    header = ["source", "model / method", "dataset, split", "same split", "metric", "value", "ours, same family",
              "note"]
    rows = [[a.get("source", ""), f"{a.get('model', '')} / {a.get('method', '')}",
             f"{a.get('dataset_detail', a.get('dataset', ''))}; {a.get('split', '')}",
             "same split" if a.get("split_method") in our_splits else "",
             METRIC_NAMES.get(a.get("metric"), str(a.get("metric", ""))),
             str(a.get("value", "")), ours(a) if ours else "", a.get("note", "")] for a in anchors]
    return ("table", header, rows)


def other_anchors(anchors: list[dict]) -> list:
    if not anchors:
        return []
    return [("h2", "Published figures beside no dataset here"),
            ("p", "Other domains, claims and costs from the literature, for context only."), anchor_table(anchors)]


def _any_true(runs: pl.DataFrame, column: str) -> bool:
    return column in runs.columns and bool((runs[column].cast(pl.String).str.to_lowercase() == "true").any())


def group_notes(runs: pl.DataFrame) -> str:
    """The warnings a method's runs carry: ⚠ collapsed (some seed answered one class for ≥ 90% of the test rows
    while gold has < 70% of it: its metrics measure a bias, not the method), ⚠ did not learn, edge."""
    notes = []
    if _any_true(runs, "collapsed"):
        notes.append("⚠ collapsed")
    if "learned" in runs.columns and (runs["learned"].cast(pl.String).str.to_lowercase() == "false").any():
        notes.append("⚠ did not learn")
    if _any_true(runs, "on_edge"):
        notes.append("edge (growth bound hit)" if _any_true(runs, "grid_bound_hit") else "edge")
    return ", ".join(notes)


def dev_choices(runs: pl.DataFrame) -> list:
    """How the settings were chosen: the value each method took on dev, from which grid, at what cost."""
    if "chosen_on_dev" not in runs.columns:
        return []
    chosen = runs.filter(pl.col("chosen_on_dev").is_not_null()).unique(["dataset", "model", "method"],
                                                                        maintain_order=True)
    rows = [[r["dataset"], label(r["method"], r["model"]),
             r["chosen_on_dev"] + (f" (by {r['learning_rate_from']})" if r.get("learning_rate_from") else ""),
             grid_cell(r), edge_cell(r), str(r.get("selection_seeds") or "–"), dev_values(r),
             fmt_int(r.get("trial_steps")) if r.get("trial_steps") is not None else
             ("the run's" if r.get("grid") is not None else "–"),
             fmt(r.get("selection_time_s"), 1)]
            for r in chosen.iter_rows(named=True)]
    text = ("Every tuned setting was chosen on the dev split, per dataset, never on test. Trained strategies: a "
            "trial per learning rate on each selection seed (the mean dev metric decides; within one standard "
            "error, the rate whose seeds disagree least), as long as the final run (\"the run's\" steps; each "
            "selection seed's winning trial is then its run) or shortened to trial_fraction of its optimizer "
            "steps (the trial steps column), then every seed trained at the chosen rate. Heads and baselines: "
            "each penalty of the grid fitted to convergence. Every grid grows by one point past its edge while "
            "the choice sits there (\"grown from\" names the declared grid); \"edge\" marks a choice still on "
            "an edge because the growth bound was hit. Prompting: each run's answer words and scoring rule by "
            "prompting a fixed dev sample with the run's own demonstrations. Other settings (budgets, k, "
            "templates) are fixed in the config, the same for every method of a family.")
    return [("h2", "How settings were chosen"), ("p", text),
            ("table", ["dataset", "method", "chosen on dev", "values tried", "edge", "seeds averaged",
                       "dev metric by value", "trial steps", "selection time (s)"], rows)]


def grid_cell(row: dict) -> str:
    """The values tried, and the declared grid when the search grew it."""
    grid, declared = row.get("grid"), row.get("declared_grid")
    if not grid:
        return "–"
    return f"{grid} (grown from {declared})" if declared and declared != grid else str(grid)


def edge_cell(row: dict) -> str:
    if str(row.get("on_edge")).lower() != "true":
        return ""
    return "edge (growth bound hit)" if str(row.get("grid_bound_hit")).lower() == "true" else "edge"


def dev_values(row: dict) -> str:
    """'1e-4: 0.612, 3e-4: 0.701' from the runs table's dev_by_value ('' for a choice without a trace)."""
    pairs = [item.split(":") for item in str(row.get("dev_by_value") or "").split()]
    metric = METRIC_NAMES.get(row.get("selection_dev_metric"), row.get("selection_dev_metric") or "")
    return (f"{metric} " if pairs else "") + ", ".join(f"{lr}: {float(v):.3f}" for lr, v in pairs)


def commits_text(runs: pl.DataFrame) -> str:
    """The commits the runs came from ("-dirty": the tree had uncommitted changes), with their run counts when
    there are several."""
    if "git_commit" not in runs.columns or not runs["git_commit"].drop_nulls().len():
        return "an unknown commit"
    counts = sorted(runs["git_commit"].drop_nulls().value_counts().iter_rows())
    text = [f"`{c.removesuffix('-dirty')[:12]}`{' with uncommitted changes' if c.endswith('-dirty') else ''}"
            + (f" ({n} run{'s' if n != 1 else ''})" if len(counts) > 1 else "") for c, n in counts]
    return ", ".join(text)


def readme_table(summary: pl.DataFrame, runs: pl.DataFrame, primary_metric, config_file=None) -> str:
    """The results table README.md carries: per dataset, every method's primary metric (mean over seeds with
    its interval), best first, under a line naming the commit and config the runs came from."""
    lines = [f"Generated by rule report (`results/readme_table.md`) from {runs.height} runs of "
             f"{commits_text(runs)}{f', config `{config_file}`' if config_file else ''}.{timing_line(runs)}", ""]
    for dataset in summary["dataset"].unique(maintain_order=True).to_list():
        part = summary.filter(pl.col("dataset") == dataset)
        task = part["task"][0]
        metric = primary_metric.get(task) if isinstance(primary_metric, dict) else primary_metric
        ranked = part.filter(pl.col("metric") == metric).sort("mean", descending=primary_direction(metric) > 0)
        lines += [f"**{dataset}** ({METRIC_NAMES.get(metric, metric)}, {ranked['confidence'][0]:.0%} interval)", "",
                  "| method | model | seeds | value | notes |", "|---|---|---|---|---|"]
        of_dataset = runs.filter(pl.col("dataset") == dataset)
        lines += [f"| {r['method']} | {r['model']} | {r['n_seeds']} | {Dataset.value_cell(r)} | "
                  f"{group_notes(of_dataset.filter((pl.col('model') == r['model']) & (pl.col('method') == r['method'])))} |"
                  for r in ranked.iter_rows(named=True)]
        lines.append("")
    return "\n".join(lines)


def timing_line(runs: pl.DataFrame) -> str:
    """' The runs took …': wall time from the first run's start to the last one's end, and the compute summed
    over the runs and their learning-rate selections (the selection of a group counted once)."""
    if not {"started", "ended", "wall_time_s"} <= set(runs.columns) or runs["started"].null_count() == runs.height:
        return ""
    stamps = runs.select(pl.col("started").str.to_datetime(time_zone="UTC").min().alias("first"),
                         pl.col("ended").str.to_datetime(time_zone="UTC").max().alias("last")).row(0)
    wall = (stamps[1] - stamps[0]).total_seconds()
    real = runs.filter(~pl.col("method").str.ends_with("-gen"))   # generated answers are another run's output
    compute = real["wall_time_s"].sum()
    if "selection_time_s" in real.columns:
        compute += real.unique(["dataset", "model", "method"])["selection_time_s"].fill_null(0).sum()
    hours = lambda seconds: f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"  # noqa: E731
    return (f" The runs took {hours(wall)} from the first start to the last end on "
            f"{hardware_of(runs)}; {hours(compute)} of job time summed over runs and learning-rate selections.")


def hardware_of(runs: pl.DataFrame) -> str:
    machines = sorted(set(runs["cpu"].drop_nulls().to_list())) if "cpu" in runs.columns else []
    return ", ".join(machines) or "an unknown machine"


def caps(runs: pl.DataFrame) -> list:
    capped = []
    for column in ("max_train_samples", "test_subset"):
        if column in runs.columns:
            rows = runs.filter(pl.col(column).is_not_null() & (pl.col(column).cast(pl.String) != "false"))
            rows = rows.unique(["dataset", "model", "method"], maintain_order=True)
            capped += [f"{r['dataset']}: {label(r['method'], r['model'])} — " +
                       (f"{column} = {r[column]}" if column == "max_train_samples" else
                        f"scored on the fixed test subset ({fmt_int(r.get('n_test'))} rows)")
                       for r in rows.iter_rows(named=True)]
    text = ("These runs used a cap on training or test rows, so they saw less data than the others:"
            if capped else "No run was capped: every method trained and was tested on all its rows.")
    return [("h2", "Caps"), ("p", text)] + ([("list", capped)] if capped else [])


# ---- rendering ----------------------------------------------------------------------------------------------

def to_markdown(blocks: list) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            _, header, rows = block
            cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "figure":
            _, name, caption = block
            out.append(f"![{caption}](figures/{name})\n\n*{caption}*")
    return "\n\n".join(out) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
figure { margin: 1rem 0; }
img { max-width: 100%; }
figcaption { font-size: 0.85rem; color: #555; }
"""


def to_html(markdown: str, figures: Path) -> str:
    """The Markdown report rendered as one self-contained page: the same text by construction, the figures
    embedded as base64 so the page makes no request of its own."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    for path in sorted(figures.rglob("*.png")):
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        name = path.relative_to(figures).as_posix()
        body = body.replace(f'src="figures/{name}"', f'src="data:image/png;base64,{data}"')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>tunebench report</title>\n"
            f"<style>{STYLE}</style></head><body>\n{body}</body></html>\n")
