"""The comparison report: report.md and a self-contained report.html from the aggregated tables.

Per dataset: the methods ranked by the primary metric with their CIs, the published anchors in their own
table, the paired comparisons and the relative gains (Wang 2024 style), a cost table, the plots, and the
strongest words of the learned dictionaries. Then the anchors that sit beside no dataset of ours, and what was
capped. Figures are PNG files in `figures/` next to report.md (linked from the Markdown, flagged for
Snakemake's report) and embedded as base64 in the HTML, which therefore makes no request of its own.
"""

from __future__ import annotations

import base64
import html
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
                 primary_metric="macro_f1", dictionary_words: int = 15) -> None:
    runs = _read(runs_csv)
    summary = _read(summary_csv)
    comparisons = _read(comparisons_csv)
    anchors_doc = yaml.safe_load(Path(anchors_yaml).read_text()) or {}
    anchors = anchors_doc.get("anchors", [])
    figures = Path(report_md).parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)

    blocks = intro(summary, anchors_doc.get("note", ""))
    shown_anchors: set[int] = set()
    for dataset in summary["dataset"].unique(maintain_order=True).to_list():
        task = summary.filter(pl.col("dataset") == dataset)["task"][0]
        primary = primary_metric.get(task) if isinstance(primary_metric, dict) else primary_metric
        context = Dataset(dataset, task, primary, runs, summary, comparisons, figures)
        matching = [i for i, a in enumerate(anchors) if context.matches(a)]
        shown_anchors.update(matching)
        blocks += context.section([anchors[i] for i in matching], dictionary_words)
    blocks += other_anchors([a for i, a in enumerate(anchors) if i not in shown_anchors])
    blocks += caps(runs)
    files.write_text(report_md, to_markdown(blocks))
    files.write_text(report_html, to_html(blocks, figures))


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
    how += ("Paired comparisons resample the same test examples for both methods; McNemar's p is the exact "
            "binomial test on the discordant examples (the largest p over seed pairs when there are several).")
    return [("h1", "tunebench: which adaptation strategy wins, by how much, and at what cost"),
            ("p", how),
            ("p", "Published figures appear in their own tables, never averaged with ours. " + anchors_note)]


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

    def __init__(self, name, task, primary, runs, summary, comparisons, figures: Path):
        self.name, self.task, self.primary, self.figures = name, task, primary, figures
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
            blocks += [("h3", "Published figures on this dataset (their own splits)"), anchor_table(anchors)]
        blocks += self.comparison_blocks()
        blocks += self.cost_table()
        blocks += self.plots()
        blocks += self.dictionary_words(n_words)
        return blocks

    # -- tables
    def methods_table(self) -> list:
        metrics = [self.primary] + [m for m in self.metrics if m != self.primary]
        header = ["#", "method", "model", "seeds"] + [METRIC_NAMES.get(m, m) for m in metrics]
        rows = []
        for rank, r in enumerate(self.ranked.iter_rows(named=True), 1):
            cells = [str(rank), r["method"], r["model"], str(r["n_seeds"])]
            for m in metrics:
                s = self.summary.filter((pl.col("model") == r["model"]) & (pl.col("method") == r["method"])
                                        & (pl.col("metric") == m))
                cells.append(self.value_cell(s.row(0, named=True)) if s.height else "–")
            rows.append(cells)
        return [("h3", "Methods"), ("table", header, rows)]

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
                              "peak_rss_mb", "tokens_per_s", "wall_time_s") if c in self.runs.columns]
        numeric = [pl.col(c).cast(pl.Float64, strict=False).mean().alias(c) for c in fields]
        return self.runs.group_by(["model", "method"], maintain_order=True).agg(numeric)

    def cost_table(self) -> list:
        costs = {(r["model"], r["method"]): r for r in self.cost_means().iter_rows(named=True)}
        header = ["method", "model", "trainable params", "fraction trainable", "train time (s)",
                  "peak memory (MB)", "tokens/s", "wall time (s)"]
        rows = []
        for r in self.ranked.iter_rows(named=True):
            c = costs.get((r["model"], r["method"]), {})
            fraction = c.get("trainable_fraction")
            rows.append([r["method"], r["model"], fmt_int(c.get("trainable_params")),
                         "–" if fraction is None else f"{fraction:.3%}", fmt(c.get("train_time_s"), 1),
                         fmt_int(c.get("peak_rss_mb")), fmt_int(c.get("tokens_per_s")),
                         fmt(c.get("wall_time_s"), 1)])
        return [("h3", "Cost (means over seeds)"), ("table", header, rows)]

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

    def save(self, fig, kind: str, caption: str):
        path = self.figures / f"{self.name}-{kind}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        return ("figure", path.name, f"{self.name}: {caption}")

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


def anchor_table(anchors: list[dict]):
    header = ["source", "model / method", "dataset, split", "metric", "value", "note"]
    rows = [[a.get("source", ""), f"{a.get('model', '')} / {a.get('method', '')}",
             f"{a.get('dataset_detail', a.get('dataset', ''))}; {a.get('split', '')}",
             METRIC_NAMES.get(a.get("metric"), str(a.get("metric", ""))),
             str(a.get("value", "")), a.get("note", "")] for a in anchors]
    return ("table", header, rows)


def other_anchors(anchors: list[dict]) -> list:
    if not anchors:
        return []
    return [("h2", "Published figures beside no dataset here"),
            ("p", "Other domains, claims and costs from the literature, for context only."), anchor_table(anchors)]


def caps(runs: pl.DataFrame) -> list:
    capped = []
    for column in ("max_train_samples", "max_test_samples"):
        if column in runs.columns:
            rows = runs.filter(pl.col(column).is_not_null()).unique(["dataset", "model", "method"],
                                                                   maintain_order=True)
            capped += [f"{r['dataset']}: {label(r['method'], r['model'])} — {column} = {r[column]}"
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


def to_html(blocks: list, figures: Path) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>tunebench report</title>", f"<style>{STYLE}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(block[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            _, header, rows = block
            out.append("<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr></thead>"
                       "<tbody>" + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                                           for row in rows) + "</tbody></table>")
        elif kind == "figure":
            _, name, caption = block
            data = base64.b64encode((figures / name).read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(caption)}">'
                       f"<figcaption>{e(caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
