# Config validation, wildcard constraints and the helpers that derive every target from config.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))
import tunebench  # noqa: E402
import tunebench.data.loaders  # noqa: E402
from tunebench import config as tbconfig  # noqa: E402

try:
    _resolved = tbconfig.validate(config, source=workflow.configfiles[-1] if workflow.configfiles else "config")
except tbconfig.ConfigError as e:
    raise WorkflowError(str(e)) from None
config.clear()
config.update(_resolved)

RUNS = tbconfig.runs(config)
NONE_MODEL = tbconfig.NO_MODEL


def _alternatives(names):
    """A regex matching exactly these names (or nothing at all)."""
    names = sorted(names, key=len, reverse=True)
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def methods_of(family):
    return [m for m, spec in config["methods"].items() if tbconfig.STRATEGY_FAMILY[spec["strategy"]] == family]


# Names come only from config, so no wildcard can form a path outside results/.
wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    model=_alternatives(list(config["models"]) + [NONE_MODEL]),
    seed=r"\d+",
    max_length=r"\d+",
    pooling="mean|cls",


# The word list lm_dictionary reads: an input, so that editing it reruns those runs.
LM_LEXICON = Path(workflow.basedir) / "data/raw/loughran_mcdonald/LoughranMcDonald_SentimentWordLists_2018.csv"

RUN_DIR = "results/runs/{dataset}/{model}/{method}/seed{seed}"


def run_dirs():
    return [f"results/runs/{r.path}" for r in RUNS]


def final_outputs():
    return [
        "results/runs.csv",
        "results/summary.csv",
        "results/comparisons.csv",
        "results/report.md",
        "results/report.html",
    ]


def model_cfg(name):
    return None if name == NONE_MODEL else config["models"][name]


def max_length(model):
    return config["models"][model]["max_length"]


def pooling_for(model, method):
    return config["methods"][method].get("pooling") or config["models"][model]["pooling"]


def tokenized_dir(dataset, model):
    return f"results/tokenized/{dataset}/{model}/len{max_length(model)}"


def features_file(dataset, model, pooling):
    return f"results/features/{dataset}/{model}/{pooling}-len{max_length(model)}.npz"


def run_inputs(wc):
    """The prepared table, plus the tokenised shards or cached features a method needs."""
    inputs = {"table": f"results/data/{wc.dataset}/table.parquet"}
    strategy = config["methods"][wc.method]["strategy"]
    family = tbconfig.STRATEGY_FAMILY[strategy]
    if family == "encoder" and strategy != "head":
        inputs["tokenized"] = tokenized_dir(wc.dataset, wc.model)
    if strategy == "head":
        inputs["features"] = features_file(wc.dataset, wc.model, pooling_for(wc.model, wc.method))
    if family == "embedding":
        inputs["features"] = features_file(wc.dataset, wc.model, "mean")
    if strategy == "lm_dictionary":
        inputs["lexicon"] = str(LM_LEXICON)
    retriever = config["methods"][wc.method].get("retriever")
    if family == "icl" and config["methods"][wc.method]["selection"] == "similar" and retriever:
        inputs["embeddings"] = features_file(wc.dataset, retriever, "mean")
    return inputs


def run_params(wc):
    """Only the slice of config this run depends on: editing another method reruns nothing here."""
    return {
        "dataset": wc.dataset,
        "model": wc.model,
        "method": wc.method,
        "seed": int(wc.seed),
        "dataset_cfg": config["datasets"][wc.dataset],
        "model_cfg": model_cfg(wc.model),
        "method_cfg": config["methods"][wc.method],
        "retriever_cfg": model_cfg(config["methods"][wc.method].get("retriever") or NONE_MODEL),
    }


def report_settings(*keys):
    return {k: config["report"][k] for k in keys}
