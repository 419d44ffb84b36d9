# Config validation, wildcard constraints and the helpers that derive every target from config.
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# tunebench's repository: this file's grandparent (also when the workflow is used as a module from elsewhere).
TUNEBENCH_REPO = Path(str(workflow.current_basedir)).resolve().parents[1]
sys.path.insert(0, str(TUNEBENCH_REPO / "workflow"))
import tunebench  # noqa: E402
import tunebench.data.loaders  # noqa: E402
import tunebench.modeling.sources  # noqa: E402
from tunebench import config as tbconfig  # noqa: E402
from tunebench import families  # noqa: E402
from tunebench import paths  # noqa: E402

try:
    _source = workflow.configfiles[-1] if workflow.configfiles else "config"
    # A quick study names the full one as its `base` (config/config.yaml over config/study.yaml): merged here,
    # under the keys of the file and of --config.
    _resolved = tbconfig.validate(tbconfig.with_base(dict(config), _source), source=_source)
except tbconfig.ConfigError as e:
    raise WorkflowError(str(e)) from None
config.clear()
config.update(_resolved)

RUNS = tbconfig.runs(config)
# Models loaded from a GGUF file: converted once by rule import_model.
GGUF_MODELS = [name for name, model in config["models"].items() if model.get("gguf_file")]
NONE_MODEL = tbconfig.NO_MODEL


def _alternatives(names):
    """A regex matching exactly these names (or nothing at all)."""
    names = sorted(names, key=len, reverse=True)
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def methods_of(family):
    return [m for m, spec in config["methods"].items() if families.family_of(spec["strategy"]) == family]


# Names come only from config, so no wildcard can form a path outside results/.
wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    model=_alternatives(list(config["models"]) + [NONE_MODEL]),
    seed=r"\d+",
    max_length=r"\d+",
    pooling="mean|cls",


def shipped_file(relative):
    """A file tunebench ships: as named, relative to the working directory, when it is there (this repository);
    else the repository's own copy (tunebench used as a module from another workflow)."""
    return relative if Path(relative).exists() else str(TUNEBENCH_REPO / relative)


# The word list lm_dictionary reads: an input, so that editing it reruns those runs.
LM_LEXICON = shipped_file("data/raw/loughran_mcdonald/LoughranMcDonald_SentimentWordLists_2018.csv")
PUBLISHED_ANCHORS = shipped_file(config["report"]["published_anchors"])
# Answers of API models, cached across runs (a rerun sends no request). Every results path: tunebench.paths.
API_CACHE = paths.api_cache()


def run_files(of):
    """One file of every run of the study: of(dataset, model, method, seed), e.g. paths.run_metrics."""
    return [of(r.dataset, r.model, r.method, r.seed) for r in RUNS]


def study_datasets():
    return list(dict.fromkeys(r.dataset for r in RUNS))


def final_outputs():
    return [paths.study_file(name) for name in paths.TABLES + paths.REPORT]


def model_cfg(name):
    return None if name == NONE_MODEL else config["models"][name]


# Dataset keys that only the aggregate step reads, so that changing how the bootstrap resamples prepares and
# reruns nothing.
AGGREGATE_ONLY_DATASET_KEYS = ("cluster",)


def dataset_settings(name):
    """A dataset's config as rules prepare and the runs see it."""
    return {k: v for k, v in config["datasets"][name].items() if k not in AGGREGATE_ONLY_DATASET_KEYS}


def dataset_clusters():
    """What the bootstrap resamples per dataset of the study (the key `cluster`; None: test examples)."""
    return {d: config["datasets"][d].get("cluster") for d in study_datasets()}


def max_length(model):
    return config["models"][model]["max_length"]


def pooling_for(model, method):
    return config["methods"][method].get("pooling") or config["models"][model]["pooling"]


def tokenized_dir(dataset, model):
    return paths.tokenized(dataset, model, max_length(model))


def features_file(dataset, model, pooling):
    return paths.features(dataset, model, pooling, max_length(model))


def run_inputs(wc):
    """The prepared table, plus what the method's strategy reads (tunebench.families) and what its keys imply,
    named as tunebench.spec.INPUT_FIELDS names them (the one mapping a run's job receives)."""
    method = config["methods"][wc.method]
    inputs = {"table": paths.table(wc.dataset)}
    for kind in families.strategy(method["strategy"]).inputs:
        if kind == "tokenized":
            inputs["tokenized"] = tokenized_dir(wc.dataset, wc.model)
        elif kind == "features":
            inputs["features"] = features_file(wc.dataset, wc.model, pooling_for(wc.model, wc.method))
        elif kind == "mean_features":
            inputs["features"] = features_file(wc.dataset, wc.model, "mean")
        elif kind == "lexicon":
            inputs["lexicon"] = LM_LEXICON
        else:
            raise WorkflowError(f"unknown input kind '{kind}' in tunebench.families")
    if wc.model in GGUF_MODELS:
        inputs["model_dir"] = paths.model_dir(wc.model)
    if tuned(method):
        inputs["selection"] = paths.selection(wc.dataset, wc.model, wc.method)
        inputs["trained"] = paths.trained(wc.dataset, wc.model, wc.method)
    elif method.get("learning_rate_from"):  # the rate another method chose on the same dataset and model
        inputs["selection"] = paths.selection(wc.dataset, wc.model, method["learning_rate_from"])
    if method.get("selection") == "similar" and method.get("retriever"):
        inputs["embeddings"] = features_file(wc.dataset, method["retriever"], "mean")
    return inputs


def tuned(method) -> bool:
    """A trained method whose learning rate is chosen on dev (rule tune_<family>)."""
    return bool(method.get("learning_rate_grid")) and families.strategy(method["strategy"]).trains


def selection_inputs(wc):
    """A selection reads what the method's runs read (but not the selection itself)."""
    inputs = run_inputs(wc)
    inputs.pop("selection", None)
    inputs.pop("trained", None)
    return inputs


def selection_params(wc):
    """The run settings of the trials: those of the method's first seed, and the seeds every rate is tried on
    (the first `select_seeds` of the method's seeds)."""
    seeds = sorted(r.seed for r in RUNS if (r.dataset, r.model, r.method) == (wc.dataset, wc.model, wc.method))
    chosen = seeds[: config["methods"][wc.method].get("select_seeds", 1)]
    return {**run_params(wc, seed=seeds[0] if seeds else 0), "seeds": chosen}


def run_params(wc, seed=None):
    """Only the slice of config this run depends on: editing another method reruns nothing here."""
    return {
        "dataset": wc.dataset,
        "model": wc.model,
        "method": wc.method,
        "seed": int(wc.seed) if seed is None else seed,
        "dataset_cfg": dataset_settings(wc.dataset),
        "model_cfg": model_cfg(wc.model),
        "method_cfg": config["methods"][wc.method],
        "retriever_cfg": model_cfg(config["methods"][wc.method].get("retriever") or NONE_MODEL),
        "api_cache": API_CACHE if (model_cfg(wc.model) or {}).get("kind") == "api" else None,
    }


def report_settings(*keys):
    return {k: config["report"][k] for k in keys}
