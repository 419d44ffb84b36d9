"""The results layout: every path a rule writes under results/, named once, for the rules and the package alike.

The rules (workflow/rules/*.smk) take their outputs and inputs from here, and the package (the estimate, the
list of runs) reads finished results through the same functions, so the layout cannot drift between the two.
Called without arguments, a function gives the Snakemake pattern: its arguments default to the wildcards
`{dataset}`, `{model}`, `{method}`, `{seed}`, `{max_length}` and `{pooling}`. `root` is the results folder (the
estimate's --results); the rules use the default.
"""

from __future__ import annotations

ROOT = "results"

D, M, X, S = "{dataset}", "{model}", "{method}", "{seed}"


# --- prepared data, tokens, features, converted models --------------------------------------------------------

def dataset_dir(dataset: str = D, root: str = ROOT) -> str:
    return f"{root}/data/{dataset}"


def table(dataset: str = D, root: str = ROOT) -> str:
    return f"{dataset_dir(dataset, root)}/table.parquet"


def splits(dataset: str = D, root: str = ROOT) -> str:
    return f"{dataset_dir(dataset, root)}/splits.csv"


def manifest(dataset: str = D, root: str = ROOT) -> str:
    return f"{dataset_dir(dataset, root)}/manifest.json"


def tokenized(dataset: str = D, model: str = M, max_length="{max_length}", root: str = ROOT) -> str:
    return f"{root}/tokenized/{dataset}/{model}/len{max_length}"


def features(dataset: str = D, model: str = M, pooling: str = "{pooling}", max_length="{max_length}",
             root: str = ROOT) -> str:
    return f"{root}/features/{dataset}/{model}/{pooling}-len{max_length}.npz"


def model_dir(model: str = M, root: str = ROOT) -> str:
    """A GGUF model's converted safetensors folder (rule import_model)."""
    return f"{root}/models/{model}"


def api_cache(root: str = ROOT) -> str:
    """Answers of API models, cached across runs (a rerun sends no request)."""
    return f"{root}/cache/api"


# --- runs and learning-rate selections ------------------------------------------------------------------------

def run_key(dataset: str = D, model: str = M, method: str = X, seed=S) -> str:
    """A run's place below results/runs (and in the tables: the run's `path`)."""
    return f"{dataset}/{model}/{method}/seed{seed}"


def run_dir(dataset: str = D, model: str = M, method: str = X, seed=S, root: str = ROOT) -> str:
    return f"{root}/runs/{run_key(dataset, model, method, seed)}"


def run_predictions(dataset: str = D, model: str = M, method: str = X, seed=S, root: str = ROOT) -> str:
    return f"{run_dir(dataset, model, method, seed, root)}/predictions.parquet"


def run_metrics(dataset: str = D, model: str = M, method: str = X, seed=S, root: str = ROOT) -> str:
    """A run's record; written last, so it marks a finished run."""
    return f"{run_dir(dataset, model, method, seed, root)}/metrics.json"


def selection(dataset: str = D, model: str = M, method: str = X, root: str = ROOT) -> str:
    """A method's learning-rate selection on one dataset and model (rule tune_<family>)."""
    return f"{root}/selection/{dataset}/{model}/{method}.json"


def trained(dataset: str = D, model: str = M, method: str = X, root: str = ROOT) -> str:
    """The selection's full-length trials at the chosen rate, a seed<N> folder each, for those seeds' runs."""
    return f"{root}/selection/{dataset}/{model}/{method}.trained"


# --- tables and the report ------------------------------------------------------------------------------------

def study_file(name: str, root: str = ROOT) -> str:
    """One of the study's tables and report files (runs.csv, summary.csv, ..., report.md, figures)."""
    return f"{root}/{name}"


TABLES = ("runs.csv", "summary.csv", "comparisons.csv", "strata.csv")
REPORT = ("report.md", "report.html")
