"""Aggregation and the report, built from a fixture of fake run folders; the HTML opened in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import polars as pl
import pytest

from tunebench.evaluation import answers, metrics
from tunebench.evaluation.aggregate import aggregate_runs
from tunebench.evaluation.report import build_report

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "neutral", "positive"]
COMPARISONS = [["full", "head"], ["full", "lm_dictionary"], ["full", "learned_dictionary"],
               ["full", "few_shot_k5"], ["full", "not_run"]]
FAMILY = {"majority": "baseline", "lm_dictionary": "baseline", "learned_dictionary": "baseline",
          "full": "encoder", "head": "encoder", "embedding_zero_shot": "embedding",
          "embedding_few_shot": "embedding", "icl": "icl"}


def write_run(root: Path, dataset: str, model: str, method: str, seed: int, gold, pred, *, strategy: str,
              method_cfg: dict | None = None, cost: dict | None = None, loader: str | None = None):
    """A run folder like runner.execute writes: predictions.parquet and metrics.json (metrics from gold/pred)."""
    task = "regression" if isinstance(gold[0], float) else "classification"
    method_cfg = {"strategy": strategy, **(method_cfg or {})}
    run_dir = root / "runs" / dataset / model / method / f"seed{seed}"
    run_dir.mkdir(parents=True)
    ids = [f"{dataset}-{i:04d}" for i in range(len(gold))]
    predictions = pl.DataFrame({"id": ids, "gold": gold, "prediction": pred})
    if task == "classification":
        scored = ["<unparsed>" if p is None else p for p in pred]
        result = metrics.classification_scalars(gold, scored, LABELS)
        result.update(metrics.classification_details(gold, scored, LABELS))
    else:
        penalty = method_cfg.get("unparsed_penalty", 0.0)
        result = metrics.regression_scalars(gold, [g - penalty if p is None else p for g, p in zip(gold, pred)])
    if any(p is None for p in pred):
        result["unparseable_rate"] = sum(p is None for p in pred) / len(pred)
    result["n_test"] = len(gold)
    dataset_cfg = {"loader": loader or dataset, "task": task, **({"labels": LABELS} if task == "classification"
                                                                else {})}
    record = {"dataset": dataset, "model": model, "method": method, "seed": seed, "task": task,
              "strategy": strategy, "family": FAMILY[strategy], "metrics": result,
              "cost": {"wall_time_s": 1.0 + seed, "eval_time_s": 0.5, "peak_rss_mb": 300.0, **(cost or {})},
              "config": {"dataset": dataset_cfg, "model": None, "method": method_cfg},
              "provenance": {"git_commit": "0123456789abcdef", "hardware": {"cpu": "Test CPU", "cpu_count": 2},
                             "started": f"2026-01-01T00:{10 * seed:02d}:00+00:00",
                             "ended": f"2026-01-01T00:{10 * seed + 5:02d}:00+00:00"}}
    predictions.write_parquet(run_dir / "predictions.parquet")
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir


def noisy_labels(rng, gold, accuracy):
    wrong = [LABELS[(LABELS.index(g) + 1) % 3] for g in gold]
    return [g if rng.random() < accuracy else w for g, w in zip(gold, wrong)]


def build_fixture(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    gold = [LABELS[i] for i in rng.integers(0, 3, 240)]
    encoder_cost = {"trainable_params": 1_000_000, "total_params": 1_000_000, "train_time_s": 120.0,
                    "tokens_per_s": 900.0}
    runs = [
        write_run(root, "fpb", "none", "majority", 0, gold, ["neutral"] * 240, strategy="majority",
                  cost={"trainable_params": 0, "train_time_s": 0.0}),
        write_run(root, "fpb", "none", "lm_dictionary", 0, gold, noisy_labels(rng, gold, 0.6),
                  strategy="lm_dictionary", cost={"trainable_params": 12, "train_time_s": 0.5}),
        write_run(root, "fpb", "none", "learned_dictionary", 0, gold, noisy_labels(rng, gold, 0.7),
                  strategy="learned_dictionary", method_cfg={"max_train_samples": 500},
                  cost={"trainable_params": 3000, "train_time_s": 2.0}),
        write_run(root, "fpb", "tiny", "head", 0, gold, noisy_labels(rng, gold, 0.75), strategy="head",
                  cost={**encoder_cost, "trainable_params": 1155, "train_time_s": 3.0}),
        write_run(root, "fpb", "tiny", "zero_shot", 0, gold, noisy_labels(rng, gold, 0.5),
                  strategy="embedding_zero_shot", cost={"trainable_params": 0}),
        write_run(root, "fpb", "tiny", "few_shot_k1", 0, gold, noisy_labels(rng, gold, 0.55),
                  strategy="embedding_few_shot", method_cfg={"shots": 1, "classifier": "centroid"}),
        write_run(root, "fpb", "tiny", "few_shot_k5", 0, gold, noisy_labels(rng, gold, 0.65),
                  strategy="embedding_few_shot", method_cfg={"shots": 5, "classifier": "centroid"}),
        write_run(root, "fpb", "tiny", "icl_k4", 0, gold,
                  [None if i % 10 == 0 else p for i, p in enumerate(noisy_labels(rng, gold, 0.6))],
                  strategy="icl", method_cfg={"k": 4, "selection": "random"},
                  cost={"trainable_params": 0, "total_params": 5_000_000, "eval_time_s": 30.0}),
    ]
    runs += [write_run(root, "fpb", "tiny", "full", seed, gold, noisy_labels(rng, gold, 0.85 + 0.02 * seed),
                       strategy="full", cost=encoder_cost) for seed in range(3)]
    words = pl.DataFrame({"word": ["profit", "loss", "said", "growth", "decline"], "train_freq": [40, 35, 90, 20, 15],
                          "weight_negative": [-1.5, 2.1, 0.0, -0.8, 1.7], "weight_neutral": [-0.2, -0.3, 0.9, 0.1, 0.0],
                          "weight_positive": [1.9, -1.8, -0.1, 1.2, -1.1]})
    words.write_csv(runs[2] / "dictionary.csv")

    score = list(np.round(rng.uniform(-1, 1, 150), 3))
    reg = [
        write_run(root, "semeval", "none", "lm_dictionary", 0, score,
                  list(0.5 * np.array(score) + rng.normal(0, 0.25, 150)), strategy="lm_dictionary",
                  cost={"trainable_params": 3, "train_time_s": 0.2}, loader="semeval17"),
        write_run(root, "semeval", "none", "learned_dictionary", 0, score,
                  list(0.6 * np.array(score) + rng.normal(0, 0.3, 150)), strategy="learned_dictionary",
                  cost={"trainable_params": 800, "train_time_s": 1.0}, loader="semeval17"),
        write_run(root, "semeval", "tiny", "full", 0, score, list(np.array(score) + rng.normal(0, 0.2, 150)),
                  strategy="full", cost=encoder_cost, loader="semeval17"),
        # Unparsed regression answers: aggregation must charge the penalty as runner.score does, or its
        # check against metrics.json fails.
        write_run(root, "semeval", "tiny", "icl_k4", 0, score,
                  [None if i % 15 == 0 else s + 0.1 for i, s in enumerate(score)], strategy="icl",
                  method_cfg={"k": 4, "selection": "random", "unparsed_penalty": 2.0}, loader="semeval17"),
    ]
    pl.DataFrame({"word": ["beat", "miss", "shares"], "train_freq": [12, 10, 50],
                  "weight": [0.8, -0.9, 0.01]}).write_csv(reg[1] / "dictionary.csv")
    return runs + reg


def aggregate(root: Path, run_dirs: list[Path], samples: int = 300):
    out = root / "results"
    aggregate_runs([d / "metrics.json" for d in run_dirs], [d / "predictions.parquet" for d in run_dirs],
                   out / "runs.csv", out / "summary.csv", out / "comparisons.csv",
                   comparisons=COMPARISONS, bootstrap_samples=samples, confidence=0.95)
    return out


def report(out: Path):
    build_report(out / "runs.csv", out / "summary.csv", out / "comparisons.csv",
                 REPO / "data" / "reference" / "published.yaml", out / "report.md", out / "report.html",
                 primary_metric={"classification": "macro_f1", "regression": "r2"}, dictionary_words=3)
    return (out / "report.md").read_text(), (out / "report.html").read_text()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run_dirs = build_fixture(root)
    out = aggregate(root, run_dirs)
    md, page = report(out)
    return root, run_dirs, out, md, page


def test_runs_table_has_one_row_per_run_with_metrics_cost_and_settings(built):
    _, run_dirs, out, _, _ = built
    runs = pl.read_csv(out / "runs.csv", infer_schema_length=None)
    assert runs.height == len(run_dirs)
    for column in ("dataset", "task", "model", "method", "strategy", "family", "seed", "accuracy", "macro_f1",
                   "r2", "unparseable_rate", "trainable_params", "trainable_fraction", "train_time_s",
                   "peak_rss_mb", "shots", "k", "max_train_samples", "run_dir"):
        assert column in runs.columns, column
    head = runs.filter((pl.col("dataset") == "fpb") & (pl.col("method") == "head")).row(0, named=True)
    assert head["trainable_fraction"] == pytest.approx(1155 / 1_000_000)
    assert runs.filter(pl.col("method") == "few_shot_k5")["shots"].to_list() == [5]


def test_summary_means_sds_and_intervals(built):
    _, _, out, _, _ = built
    summary = pl.read_csv(out / "summary.csv", infer_schema_length=None)
    assert summary.columns[:10] == ["dataset", "task", "model", "method", "metric", "mean", "sd", "ci_low",
                                    "ci_high", "n_seeds"]
    runs = pl.read_csv(out / "runs.csv", infer_schema_length=None)
    full = runs.filter((pl.col("dataset") == "fpb") & (pl.col("method") == "full"))["accuracy"]
    row = summary.filter((pl.col("dataset") == "fpb") & (pl.col("method") == "full")
                         & (pl.col("metric") == "accuracy")).row(0, named=True)
    assert row["n_seeds"] == 3 and row["ci_over"] == "seeds and test examples"
    assert row["mean"] == pytest.approx(full.mean()) and row["sd"] == pytest.approx(full.std())
    single = summary.filter(pl.col("n_seeds") == 1)
    assert single["sd"].null_count() == single.height and set(single["ci_over"]) == {"test examples"}
    bounded = summary.filter(pl.col("ci_low").is_not_null())
    assert (bounded["ci_low"] <= bounded["mean"] + 1e-12).all() and (bounded["mean"] <= bounded["ci_high"] + 1e-12).all()
    icl = summary.filter((pl.col("dataset") == "semeval") & (pl.col("method") == "icl_k4"))
    assert icl.filter(pl.col("metric") == "unparseable_rate")["mean"][0] == pytest.approx(10 / 150)


def test_comparisons_pair_models_and_skip_absent_methods(built):
    _, _, out, _, _ = built
    comp = pl.read_csv(out / "comparisons.csv", infer_schema_length=None)
    pairs = set(comp.select("dataset", "a", "model_a", "b", "model_b").unique().iter_rows())
    assert pairs == {("fpb", "full", "tiny", "head", "tiny"), ("fpb", "full", "tiny", "lm_dictionary", "none"),
                     ("fpb", "full", "tiny", "learned_dictionary", "none"),
                     ("fpb", "full", "tiny", "few_shot_k5", "tiny"),
                     ("semeval", "full", "tiny", "lm_dictionary", "none"),
                     ("semeval", "full", "tiny", "learned_dictionary", "none")}
    assert (comp["difference"] - (comp["value_a"] - comp["value_b"])).abs().max() < 1e-12
    classification = comp.filter(pl.col("task") == "classification")
    assert classification["mcnemar_p"].is_between(0, 1).all()
    assert comp.filter(pl.col("task") == "regression")["mcnemar_p"].null_count() > 0
    mse = comp.filter((pl.col("dataset") == "semeval") & (pl.col("b") == "lm_dictionary")
                      & (pl.col("metric") == "mse")).row(0, named=True)
    assert mse["relative_gain_pct"] == pytest.approx(100 * (mse["value_a"] - mse["value_b"]) / mse["value_b"])
    assert mse["relative_ci_low"] <= mse["relative_gain_pct"] <= mse["relative_ci_high"]


def test_aggregation_is_deterministic_and_checks_metrics_against_predictions(built, tmp_path):
    root, run_dirs, out, _, _ = built
    again = aggregate(tmp_path, run_dirs)
    for name in ("summary.csv", "comparisons.csv"):
        assert (again / name).read_text() == (out / name).read_text()
    broken = tmp_path / "broken"
    shutil.copytree(run_dirs[1], broken)
    record = json.loads((broken / "metrics.json").read_text())
    record["metrics"]["accuracy"] += 0.1
    (broken / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="accuracy recomputed from predictions.parquet"):
        aggregate(tmp_path / "b", [broken])


def test_report_has_tables_gains_anchors_words_and_caps(built):
    _, _, out, md, _ = built
    fpb = md.split("## fpb")[1].split("\n## ")[0]
    methods = fpb.split("### Methods")[1].split("###")[0]
    first = [line for line in methods.splitlines() if line.startswith("| 1 |")][0]
    assert "| full | tiny | 3 |" in first  # best first by macro-F1
    assert "Araci (2019)" in fpb and "| weighted-F1 | 0.882 |" in fpb  # anchors beside FPB, in their own table
    # our runs of the anchor's family beside it (published.yaml `ours`), on its metric; none of another family
    summary = pl.read_csv(out / "summary.csv", infer_schema_length=None)
    ours = summary.filter((pl.col("dataset") == "fpb") & (pl.col("method") == "full")
                          & (pl.col("metric") == "weighted_f1"))["mean"][0]
    anchors = [line for line in fpb.splitlines() if line.startswith("| FinGPT README")]
    finbert = [line for line in anchors if "FinBERT / full fine-tuning" in line][0]
    assert f"| full (tiny) {ours:.3f} |" in finbert
    zero_shot = [line for line in anchors if "GPT-4 / zero-shot" in line][0]
    assert "icl_k4" not in zero_shot and "full (tiny)" not in zero_shot  # k = 4 is not zero-shot
    assert re.search(r"full \(tiny\) vs lm_dictionary: [+−]\d+\.\d% macro-F1 \[", fpb)
    semeval = md.split("## semeval")[1]
    assert re.search(r"full \(tiny\) vs lm_dictionary: \+\d+\.\d% R² \[.*\], −\d+\.\d% MSE \[", semeval)
    assert "profit (+1.90)" in fpb and "loss (+2.10)" in fpb  # strongest word per class
    assert "beat (+0.80)" in semeval and "miss (-0.90)" in semeval
    assert "Wang (2024)" in md.split("## Published figures on other datasets")[1]
    assert "learned_dictionary — max_train_samples = 500" in md
    assert "resample seeds as well as test examples" in md
    for name in ("fpb/all/by-method", "fpb/all/vs-params", "fpb/all/vs-cost", "fpb/all/k-shot",
                 "semeval/all/by-method", "semeval/all/vs-cost"):
        assert f"(figures/{name}.png)" in md
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    assert "semeval/all/k-shot" not in md  # one ICL run with a single k there: no curve


def test_report_opens_with_the_headline(built):
    """Per dataset: the winner, the best method of another family, their paired gap from comparisons.csv and
    their cost with inference; the cost plot with every family, per-class F1 and the confusion matrices."""
    _, _, out, md, _ = built
    lines = md.splitlines()
    assert lines[0].startswith("# tunebench (full study)") and lines[2].startswith("**This is the full study**")
    assert lines[4].startswith("## Headline")
    headline = md.split("## Headline")[1].split("\n## ")[0]
    summary = pl.read_csv(out / "summary.csv", infer_schema_length=None)
    runs = pl.read_csv(out / "runs.csv", infer_schema_length=None)
    ranked = (summary.filter((pl.col("dataset") == "fpb") & (pl.col("metric") == "macro_f1"))
              .join(runs.unique(["dataset", "model", "method"]).select("dataset", "model", "method", "family"),
                    on=["dataset", "model", "method"]).sort("mean", descending=True))
    assert ranked["method"][0] == "full"
    other = ranked.filter(pl.col("family") != "encoder").row(0, named=True)   # the best of another family
    gap = pl.read_csv(out / "comparisons.csv").filter(
        (pl.col("dataset") == "fpb") & (pl.col("b") == other["method"]) & (pl.col("metric") == "macro_f1")).row(0, named=True)
    row = [line for line in headline.splitlines() if line.startswith("| fpb |")][0]
    assert f"| full (tiny), encoder | {ranked['mean'][0]:.3f} ± " in row and f"| {other['method']}, baseline |" in row
    assert f"| {gap['difference']:.3f} [{gap['ci_low']:.3f}, {gap['ci_high']:.3f}] (240 rows) |" in row
    full = runs.filter((pl.col("dataset") == "fpb") & (pl.col("method") == "full"))
    total = full["train_time_s"].mean() + full["eval_time_s"].mean()   # train + selection (none) + inference
    assert f"| {total:,.1f} s, 1.0M params trained |" in row
    assert f"### Winner on fpb: full (tiny)\n\nfull (tiny) − {other['method']}, the best of another family" in headline
    assert "| winner | full (tiny) | encoder | 120.0 |" in headline and "#### Per-class F1 of these two" in headline
    cost_plot = [line for line in headline.splitlines() if "(figures/fpb/all/vs-cost.png)" in line][0]
    assert "every family (baseline, encoder, frozen embeddings, prompting)" in cost_plot   # prompting: inference
    for method in ("full", other["method"]):
        assert f"(figures/fpb/{method}/confusion.png)" in headline
        assert (out / "figures" / "fpb" / method / "confusion.png").stat().st_size > 1000
    assert "(figures/semeval/all/vs-cost.png)" in headline and "semeval/full/confusion" not in md   # regression
    fpb = md.split("## fpb")[1].split("\n## ")[0]
    majority = [line for line in fpb.split("### Methods")[1].splitlines() if line.startswith("| ") and "| majority |" in line][0]
    assert "n/a (constant prediction)" in majority   # MCC of one answer for every row is undefined, not 0.000


def test_undefined_metrics_traces_and_grids_read_right():
    from tunebench.evaluation.sections import dev_values, grid_cell, value_cell

    constant = {"metric": "pearson", "mean": 0.0, "sd": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_seeds": 2}
    assert value_cell(constant) == "n/a (constant prediction)"
    assert value_cell({**constant, "metric": "r2"}) == "0.000 ± 0.000 [0.000, 0.000]"   # R² is defined
    assert value_cell({**constant, "ci_high": 0.1}) == "0.000 ± 0.000 [0.000, 0.100]"   # some spread somewhere
    trace = {"dev_by_value": "0.0001:0.5 0.0003:0.55 0.001:0.6 3e-05:0.4", "selection_dev_metric": "macro_f1"}
    assert dev_values(trace) == "macro-F1 3e-05: 0.400, 0.0001: 0.500, 0.0003: 0.550, 0.001: 0.600"
    prompts = {"dev_by_value": "labels/mean:0.31 labels/calibrated:0.5", "selection_dev_metric": "macro_f1"}
    assert dev_values(prompts) == "macro-F1 labels/mean: 0.310, labels/calibrated: 0.500"   # not numbers: as given
    assert grid_cell({"grid": "0.0001 0.001 3e-05", "declared_grid": "0.001 0.0001"}) == \
        "3e-05 0.0001 0.001 (grown from 0.0001 0.001)"


def test_cost_plot_labels_never_overlap():
    """Thirty methods in one corner: the labels stand in a column, one line apart, none over another."""
    import matplotlib.pyplot as plt

    from tunebench.evaluation import plots

    points = [{"x": 1.0 + 0.01 * i, "y": 0.5 + 0.001 * i, "label": f"method_{i} (some-model)", "group": f"g{i % 3}"}
              for i in range(30)]
    fig = plots.against_cost(points, "cost", "metric", 1)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 30
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    plt.close(fig)


def test_no_function_of_the_evaluation_package_is_over_60_lines():
    """The report is section functions, plots.py and one renderer; nothing in evaluation/ grows into a page."""
    import ast

    long = [f"{path.name}: {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted((REPO / "workflow" / "tunebench" / "evaluation").glob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert long == []


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.external = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if tag != "a" and attrs.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[key])


def check_images(page: str, expected: int):
    parser = Images()
    parser.feed(page)
    assert not parser.external
    assert len(parser.sources) == expected
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        image = matplotlib.image.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert image.shape[0] > 100 and image.shape[1] > 100  # a whole figure decodes, not a truncated one


def test_html_is_self_contained(built):
    _, _, _, md, page = built
    check_images(page, md.count("](figures/"))
    assert "<script" not in page and "<link" not in page


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium; CI installs it (.ci/run → tests/install_chromium.sh), so there it must be found."""
    path = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if Path(p).exists()), None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true, but chromium is not installed: .ci/run installs it with tests/install_chromium.sh")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it and runs this test")
    return path


def headless(chromium, profile: Path, *args, timeout=120):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=timeout)


# Marks every image with whether the browser decoded it, once the page has loaded; --dump-dom then shows the
# marks. It goes into a copy of the page: report.html itself carries no script.
PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) img.setAttribute("data-loaded", String(img.complete && img.naturalWidth > 0));
  document.body.setAttribute("data-probe", "done");
});
</script>"""


class Rendered(HTMLParser):
    """What the probe marked, and the second-level headings in order."""

    def __init__(self):
        super().__init__()
        self.loaded, self.h2, self.probe, self._in_h2 = [], [], None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.loaded.append(attrs.get("data-loaded"))
        elif tag == "body":
            self.probe = attrs.get("data-probe")
        elif tag == "h2":
            self._in_h2 = True
            self.h2.append("")

    def handle_endtag(self, tag):
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2[-1] += data


def test_report_opens_in_chromium_with_the_headline_first_and_every_image_loaded(built, chromium, tmp_path):
    _, _, _, md, page = built
    probed = tmp_path / "report.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = headless(chromium, tmp_path / "profile", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = Rendered()
    rendered.feed(dom.stdout)
    assert rendered.probe == "done", "the load event never fired before the DOM was dumped"
    assert rendered.loaded and len(rendered.loaded) == md.count("](figures/")
    assert set(rendered.loaded) == {"true"}, rendered.loaded   # every figure decoded (naturalWidth > 0)
    assert rendered.h2[0].startswith("Headline") and rendered.h2[1] == "How to read the numbers"
    headline = dom.stdout.split("<h2>Headline")[1].split("<h2>")[0]
    assert "<td>fpb</td>" in headline and "<td>semeval</td>" in headline
    assert headline.count("<img") == 4   # two cost plots, the confusion matrices of fpb's two headline methods
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    errors = [line for line in dom.stderr.splitlines() if "ERR_" in line or "Failed to load" in line]
    assert not errors, errors


@pytest.mark.integration
def test_snakemake_report_includes_tables_and_figures(smoke_run):
    from conftest import run_snakemake

    workdir, _ = smoke_run
    run_snakemake(workdir, "--report", "results/snakemake-report.html")
    page = (workdir / "results" / "snakemake-report.html").read_text()
    figures = sorted((workdir / "results" / "figures").rglob("*.png"))
    assert figures and all(path.name in page for path in figures)
    # one subcategory per dataset and a method label, so the report toggles figures by dataset and by method
    assert all(path.parent.parent.name in page and path.parent.name in page for path in figures)
    for name in ("runs.csv", "summary.csv", "comparisons.csv", "report.md", "report.html"):
        assert name in page, name


def test_generated_answers_strata_dev_choices_and_readme_table(tmp_path):
    """decoding both → a `<method>-gen` run from the generate block; agreement strata from the table; the
    setting chosen on dev with its edge flag; a did-not-learn mark; the cross-model comparison; README's
    table written by the report."""
    from tunebench import runner

    rng = np.random.default_rng(1)
    gold = [LABELS[i] for i in rng.integers(0, 3, 200)]
    ids = [f"fpb-{i:04d}" for i in range(200)]
    table = tmp_path / "table.parquet"
    pl.DataFrame({"id": ids, "agreement": ["allagree" if i % 2 else "50agree" for i in range(200)]}).write_parquet(table)
    selection = {"grid": [1e-4, 3e-4, 1e-3], "chosen": 1e-3, "on_edge": True, "selection_time_s": 12.5,
                 "dev_metric": "macro_f1", "dev_by_learning_rate": {"0.0001": 0.41, "0.0003": 0.52, "0.001": 0.63},
                 "trial_steps": 16}
    check = {"learned": False, "reason": "dev macro_f1 0.2 not better than the trivial baseline's 0.3"}
    full = write_run(tmp_path, "fpb", "tiny", "full", 0, gold, noisy_labels(rng, gold, 0.8), strategy="full",
                     cost={"selection": selection, "learning_check": check, "precision": "bf16"})
    icl = write_run(tmp_path, "fpb", "llm", "llm_k0", 0, gold, noisy_labels(rng, gold, 0.6), strategy="icl",
                    method_cfg={"k": 0, "selection": "random", "decoding": "both"})
    generated = [None if i % 4 == 0 else p for i, p in enumerate(noisy_labels(rng, gold, 0.5))]
    preds = pl.read_parquet(icl / "predictions.parquet").with_columns(pl.Series("generated_prediction", generated))
    preds.write_parquet(icl / "predictions.parquet")
    record = json.loads((icl / "metrics.json").read_text())
    spec = type("Spec", (), {"task": "classification", "labels": LABELS, "method_cfg": {}})()
    record["metrics"]["generate"] = {**runner.test_metrics(spec, gold, generated, True),
                                     **answers.parse_rule_metrics(gold, generated, "classification", LABELS)}
    (icl / "metrics.json").write_text(json.dumps(record))
    out = tmp_path / "results"
    aggregate_runs([d / "metrics.json" for d in (full, icl)], [d / "predictions.parquet" for d in (full, icl)],
                   out / "runs.csv", out / "summary.csv", out / "comparisons.csv", out / "strata.csv",
                   tables={"fpb": table}, comparisons=[["full", "llm_k0"], ["llm_k0", "llm_k0-gen"]],
                   bootstrap_samples=200)
    runs = pl.read_csv(out / "runs.csv")
    assert sorted(runs["method"].to_list()) == ["full", "llm_k0", "llm_k0-gen"]
    gen = runs.filter(pl.col("method") == "llm_k0-gen").row(0, named=True)
    assert gen["unparseable_rate"] == pytest.approx(0.25) and gen["decoding"] == "generate"
    assert runs.filter(pl.col("method") == "full")["chosen_on_dev"][0] == "learning_rate=0.001"
    strata = pl.read_csv(out / "strata.csv").filter(pl.col("metric") == "accuracy")
    assert set(strata["agreement"]) == {"allagree", "50agree"} and set(strata["n_test"]) == {100}
    # The strata accuracies average back to the whole test set's.
    whole = runs.filter(pl.col("method") == "full")["accuracy"][0]
    assert strata.filter(pl.col("method") == "full")["mean"].mean() == pytest.approx(whole)
    pairs = pl.read_csv(out / "comparisons.csv")
    assert {("full", "llm_k0"), ("llm_k0", "llm_k0-gen")} <= set(zip(pairs["a"], pairs["b"]))
    build_report(out / "runs.csv", out / "summary.csv", out / "comparisons.csv",
                 REPO / "data" / "reference" / "published.yaml", out / "report.md", out / "report.html",
                 strata_csv=out / "strata.csv", readme_md=out / "readme_table.md", config_file="config/x.yaml")
    md = (out / "report.md").read_text()
    assert "⚠ did not learn, edge" in md and "| fpb | full (tiny) | learning_rate=0.001 | 0.0001 0.0003 0.001 | edge |" in md
    # the dev trace: one value per learning rate in the table, and the method's own selection figure
    assert "| macro-F1 0.0001: 0.410, 0.0003: 0.520, 0.001: 0.630 | 16 |" in md
    assert "(figures/fpb/full/lr-selection.png)" in md and (out / "figures/fpb/full/lr-selection.png").exists()
    # the generated answers folded into their run's row: a column, not a row of their own
    methods = md.split("### Methods")[1].split("###")[0]
    gen = runs.filter(pl.col("method") == "llm_k0-gen")["macro_f1"][0]
    assert "| llm_k0 | llm |" in methods and "llm_k0-gen" not in methods
    assert "generated answers: macro-F1" in methods and f"| {gen:.3f} [" in methods
    prompting = md.split("### Fine-tuning vs prompting")[1].split("###")[0]
    assert [line for line in prompting.splitlines() if line.startswith("| prompting, zero-shot | llm_k0 |")]
    assert "macro-F1 of generated answers" in prompting and f"| {gen:.3f} [" in prompting
    assert "| llm_k0, generated answers | llm | 0.250 |" in md   # the parse-rule table
    assert "### Scores by annotator agreement" in md and "allagree (n = 100)" in md
    readme = (out / "readme_table.md").read_text()
    assert "| llm_k0-gen | llm | 1 |" in readme and "\n**fpb** (macro-F1, 95% interval)\n" in readme
    assert readme.startswith("Generated by rule report") and "config `config/x.yaml`" in readme
    assert "of `0123456789ab`" in readme and "on Test CPU (2 cores)" in readme
    assert "The runs took 0 h 05 min from the first start to the last end" in readme


def test_the_readme_line_names_each_commit_once_and_marks_uncommitted_changes():
    from tunebench.evaluation.report import commits_text

    runs = pl.DataFrame({"git_commit": ["a" * 40 + "-dirty"] * 3 + ["a" * 40] + [None]})
    assert commits_text(runs) == f"`{'a' * 12}` (1 run), `{'a' * 12}` with uncommitted changes (3 runs)"
    assert commits_text(pl.DataFrame({"git_commit": ["b" * 40] * 2})) == f"`{'b' * 12}`"
    assert commits_text(pl.DataFrame({"x": [1]})) == "an unknown commit"


def test_the_wall_time_of_runs_added_at_a_later_commit_leaves_out_the_hours_between():
    """A study extended later (new runs at another commit) took the two sessions' spans, not the idle gap."""
    from tunebench.evaluation.report import timing_line

    runs = pl.DataFrame({"git_commit": ["a", "a", "b"], "method": ["x", "y", "z"], "wall_time_s": [60.0, 60.0, 60.0],
                         "started": ["2026-01-01T10:00:00+00:00", "2026-01-01T10:30:00+00:00", "2026-01-01T15:00:00+00:00"],
                         "ended": ["2026-01-01T10:40:00+00:00", "2026-01-01T10:50:00+00:00", "2026-01-01T15:20:00+00:00"],
                         "cpu": ["Test CPU (2 cores)"] * 3})
    line = timing_line(runs)
    assert "took 1 h 10 min from the first start to the last end (the runs of each commit, summed)" in line
    assert "took 0 h 50 min from the first start to the last end on" in timing_line(runs.filter(pl.col("git_commit") == "a"))


def test_collapsed_runs_are_flagged_and_per_class_f1_and_prompt_choices_are_shown(tmp_path):
    """A prompting run that answers one class for every row is flagged "⚠ collapsed" in the report and the
    README table (not left looking fine); the per-class F1 table and the dev choice of answer words and scoring
    rule appear, with the uncalibrated rule's test score beside the chosen one."""
    rng = np.random.default_rng(2)
    gold = [LABELS[i] for i in rng.integers(0, 3, 150)]
    choice = {"verbaliser": "labels", "scoring": "calibrated", "dev_metric": "macro_f1", "dev_value": 0.5,
              "dev_by_candidate": {"labels/mean": 0.31, "labels/calibrated": 0.5}, "dev_rows": 200}
    dirs = [write_run(tmp_path, "fpb", "llm", "llm_k5", 0, gold, ["positive"] * 150, strategy="icl",
                      method_cfg={"k": 5, "selection": "random"},
                      cost={"scoring": "mean", "verbaliser": "labels", "demonstration_draw": "random/per_run"}),
            write_run(tmp_path, "fpb", "llm", "llm_k1", 0, gold, noisy_labels(rng, gold, 0.7), strategy="icl",
                      method_cfg={"k": 1, "selection": "random"},
                      cost={"scoring": "calibrated", "verbaliser": "labels", "prompt_selection": choice,
                            "demonstration_draw": "random/per_run"})]
    for run_dir in dirs:   # what runner.test_metrics adds to every classifier run
        record = json.loads((run_dir / "metrics.json").read_text())
        preds = pl.read_parquet(run_dir / "predictions.parquet")
        record["metrics"].update(metrics.prediction_spread(preds["gold"].to_list(), preds["prediction"].to_list()))
        record["metrics"]["macro_f1_mean"] = 0.123
        (run_dir / "metrics.json").write_text(json.dumps(record))
    out = tmp_path / "results"
    aggregate_runs([d / "metrics.json" for d in dirs], [d / "predictions.parquet" for d in dirs],
                   out / "runs.csv", out / "summary.csv", out / "comparisons.csv", bootstrap_samples=100)
    runs = pl.read_csv(out / "runs.csv")
    collapsed = runs.filter(pl.col("method") == "llm_k5").row(0, named=True)
    assert collapsed["collapsed"] is True and collapsed["top_class_share"] == 1.0
    assert collapsed["f1_negative"] == 0.0 and collapsed["demonstration_draw"] == "random/per_run"
    chosen = runs.filter(pl.col("method") == "llm_k1").row(0, named=True)
    assert chosen["chosen_on_dev"] == "verbaliser=labels scoring=calibrated" and not chosen["collapsed"]
    assert chosen["selection_dev_value"] == 0.5   # the chosen candidate's dev score, for the best-per-k table
    build_report(out / "runs.csv", out / "summary.csv", out / "comparisons.csv",
                 REPO / "data" / "reference" / "published.yaml", out / "report.md", out / "report.html",
                 readme_md=out / "readme_table.md")
    md = (out / "report.md").read_text()
    assert "### Per-class F1" in md and "| llm_k5 | llm | 0.000 | 0.000 |" in md
    assert md.count("⚠ collapsed") >= 3   # methods table, per-class table, legend
    assert "labels/calibrated: 0.500" in md and "| calibrated, labels | 0.123 |" in md
    readme = (out / "readme_table.md").read_text()
    assert [line for line in readme.splitlines() if line.startswith("| llm_k5 |")][0].endswith("| ⚠ collapsed |")
    assert [line for line in readme.splitlines() if line.startswith("| llm_k1 |")][0].endswith("|  |")


def test_mcnemar_takes_every_seed_pair_and_says_how_many(built):
    """full has three seeds, head one: McNemar runs on all three pairs (not seed 0 alone) and keeps the largest p."""
    from tunebench.evaluation import stats

    _, run_dirs, out, md, _ = built
    comp = pl.read_csv(out / "comparisons.csv", infer_schema_length=None)
    row = comp.filter((pl.col("b") == "head") & (pl.col("metric") == "accuracy")).row(0, named=True)
    correct = {d.parent.name + "/" + d.name: pl.read_parquet(d / "predictions.parquet").select(
        pl.col("gold") == pl.col("prediction"))["gold"].to_numpy() for d in run_dirs if d.parts[-4] == "fpb"}
    head = correct["head/seed0"]
    p_values = [stats.mcnemar_exact(correct[f"full/seed{s}"], head) for s in range(3)]
    assert row["mcnemar_pairs"] == 3 and row["mcnemar_p"] == pytest.approx(max(p_values))
    assert max(p_values) > min(p_values)   # the pairs disagree, so which ones are used matters
    assert set(comp.filter(pl.col("task") == "classification")["mcnemar_pairs"]) == {3}
    assert comp.filter(pl.col("task") == "regression")["mcnemar_pairs"].null_count() > 0
    assert "largest p over every pair of their seeds" in md


def clustered_fixture(root: Path):
    """60 headlines of 4 rows each: a method is right or wrong on a whole headline at once (one seed of
    `one`, three of `three`), so its examples are far from independent."""
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(60), 4)
    gold = [LABELS[i] for i in rng.integers(0, 3, 240)]
    ids = [f"clus-{i:04d}" for i in range(240)]
    table = root / "table.parquet"
    pl.DataFrame({"id": ids, "text": [f"company {i % 4}: headline {g}" for i, g in enumerate(groups)],
                  "group": [f"headline {g}" for g in groups]}).write_parquet(table)

    def by_headline(accuracy):
        right = (rng.random(60) < accuracy)[groups]
        return [g if r else LABELS[(LABELS.index(g) + 1) % 3] for g, r in zip(gold, right)]

    dirs = [write_run(root, "clus", "tiny", "one", 0, gold, by_headline(0.7), strategy="full")]
    dirs += [write_run(root, "clus", "tiny", "three", s, gold, by_headline(0.6), strategy="full") for s in range(3)]
    return dirs, table


@pytest.mark.parametrize("cluster", ["group", "duplicates"])
def test_the_bootstrap_resamples_the_clusters_a_dataset_declares(tmp_path, cluster):
    dirs, table = clustered_fixture(tmp_path)
    if cluster == "duplicates":   # the same headline text for a group's rows: one near-duplicate unit
        pl.read_parquet(table).with_columns(pl.col("text").str.replace(r"^company \d: ", ""),
                                            pl.lit(None, dtype=pl.String).alias("group")).write_parquet(table)
    tables = {}
    for how in (None, cluster):
        out = tmp_path / f"results-{how}"
        aggregate_runs([d / "metrics.json" for d in dirs], [d / "predictions.parquet" for d in dirs],
                       out / "runs.csv", out / "summary.csv", out / "comparisons.csv", tables={"clus": table},
                       comparisons=[["three", "one"]], bootstrap_samples=500, clusters={"clus": how})
        tables[how] = (pl.read_csv(out / "summary.csv").filter(pl.col("metric") == "accuracy").sort("method"),
                       pl.read_csv(out / "comparisons.csv").filter(pl.col("metric") == "accuracy"))
    (rows, rows_comp), (clusters, clusters_comp) = tables[None], tables[cluster]
    assert set(rows["resampling_unit"]) == set(rows_comp["resampling_unit"]) == {"row"}
    assert set(clusters["resampling_unit"]) == set(clusters_comp["resampling_unit"]) == {cluster}
    assert clusters["mean"].to_list() == rows["mean"].to_list()   # the same estimates, other intervals
    assert clusters["n_seeds"].to_list() == [1, 3]
    # Resampling 60 headlines, not 240 rows, widens every interval by about sqrt(4): one seed, the two-level
    # bootstrap over three seeds, and the paired difference.
    width = lambda df: (df["ci_high"] - df["ci_low"]).to_numpy()  # noqa: E731
    assert (width(clusters) > 1.5 * width(rows)).all(), (width(clusters), width(rows))
    assert (width(clusters_comp) > 1.5 * width(rows_comp)).all()
    from tunebench.evaluation.sections import clusters_text

    summary = pl.read_csv(tmp_path / f"results-{cluster}" / "summary.csv")
    assert f"clus by {'group' if cluster == 'group' else 'near-duplicate unit'}" in clusters_text(summary)
    assert clusters_text(pl.read_csv(tmp_path / "results-None" / "summary.csv")) == ""


def test_cluster_group_needs_a_group_in_the_table(tmp_path):
    dirs, table = clustered_fixture(tmp_path)
    pl.read_parquet(table).with_columns(pl.lit(None, dtype=pl.String).alias("group")).write_parquet(table)
    out = tmp_path / "results"
    with pytest.raises(Exception, match="cluster 'group', but the table has no group"):
        aggregate_runs([d / "metrics.json" for d in dirs], [d / "predictions.parquet" for d in dirs],
                       out / "runs.csv", out / "summary.csv", out / "comparisons.csv", tables={"clus": table},
                       clusters={"clus": "group"})
