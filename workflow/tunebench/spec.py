"""What a run is given (`RunSpec`) and what a strategy gives back (`RunOutput`): the ground every layer stands on.

A RunSpec is made in one place, `RunSpec.from_config`, from a resolved config (or the slice of it that names
this run's dataset, model and method) and the run's input files, keyed by the input names a rule declares
(INPUT_FIELDS). Nothing here imports another tunebench module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

# A rule's input name → the RunSpec field that holds its path.
INPUT_FIELDS = {
    "table": "table_path",           # the prepared table (rule prepare)
    "tokenized": "tokenized_dir",    # encoder / seq2seq families: Arrow shards of this (dataset, model)
    "features": "features_path",     # head / embedding strategies: cached pooled features
    "embeddings": "embeddings_path",  # icl with similar demonstrations: cached sentence embeddings
    "lexicon": "lexicon_path",       # lm_dictionary: the Loughran-McDonald word list
    "model_dir": "model_dir",        # a GGUF model entry: its converted safetensors folder (rule import_model)
    "selection": "selection_path",   # a method whose learning rate is chosen on dev: its selection (rule tune_*)
    "trained": "trained_dir",        # the selection's full-length trials at the chosen rate, one folder a seed
}


@dataclass
class RunSpec:
    dataset: str
    model: str
    method: str
    seed: int
    dataset_cfg: dict
    model_cfg: dict | None
    method_cfg: dict
    run_dir: Path
    table_path: str | None = None
    threads: int = 1
    tokenized_dir: str | None = None
    features_path: str | None = None
    embeddings_path: str | None = None
    lexicon_path: str | None = None
    model_dir: str | None = None
    selection_path: str | None = None
    trained_dir: str | None = None
    extra: dict = field(default_factory=dict)
    # Settings chosen on dev (the learning rate; a trial's step budget), over the method's own: the method config
    # stays as configured, and `settings` is what the run trains with. selection_trace: the choice's record.
    chosen: dict = field(default_factory=dict)
    selection_trace: dict | None = None

    @classmethod
    def from_config(cls, config: Mapping, dataset: str, model: str, method: str, seed: int = 0, *,
                    run_dir, inputs: Mapping | None = None, threads: int = 1, extra: Mapping | None = None):
        """The run of (dataset, model, method, seed) under `config` (keys datasets, models, methods; a model
        that is not there, such as the model-free runs' `none`, has no model config). `inputs` maps rule input
        names (INPUT_FIELDS) to their paths."""
        inputs = dict(inputs or {})
        unknown = sorted(set(inputs) - set(INPUT_FIELDS))
        if unknown:
            raise KeyError(f"unknown run inputs {unknown} (known: {', '.join(INPUT_FIELDS)})")
        return cls(dataset=dataset, model=model, method=method, seed=seed,
                   dataset_cfg=config["datasets"][dataset], model_cfg=(config.get("models") or {}).get(model),
                   method_cfg=config["methods"][method], run_dir=Path(run_dir), threads=threads,
                   extra=dict(extra or {}), **{INPUT_FIELDS[name]: path for name, path in inputs.items()})

    @property
    def settings(self) -> dict:
        """The method's config with the settings chosen on dev over it."""
        return {**self.method_cfg, **self.chosen}

    @property
    def task(self) -> str:
        return self.dataset_cfg["task"]

    @property
    def labels(self) -> list[str] | None:
        return self.dataset_cfg.get("labels")

    @property
    def strategy(self) -> str:
        return self.method_cfg["strategy"]

    def table(self) -> pl.DataFrame:
        return pl.read_parquet(self.table_path)

    def split(self, name: str) -> pl.DataFrame:
        return self.table().filter(pl.col("split") == name)

    def test_rows(self) -> pl.DataFrame:
        """The rows a method is scored on: the test split, or its fixed subset (`test_subset: true`: the rows the
        dataset marks in its table, the same for every method and seed that uses it), in the split's order."""
        test = self.split("test")
        if self.method_cfg.get("test_subset"):
            if "test_subset" not in test.columns:
                raise ValueError(f"{self.method}: test_subset is set but dataset '{self.dataset}' defines no test "
                                 f"subset (config key datasets.{self.dataset}.test_subset)")
            test = test.filter(pl.col("test_subset"))
        return test

    @property
    def target_column(self) -> str:
        return "label" if self.task == "classification" else "target"


@dataclass
class RunOutput:
    """What a strategy returns.

    predictions: one row per test example: `id`, `prediction` (label name or number; None where a generated
      answer could not be parsed), and for classification optionally `score_<label>` columns.
    info: cost and method facts — trainable_params, total_params, train_time_s, eval_time_s, tokens_per_s,
      epochs, best_dev_metric, device, precision, train_rows, ... (whatever applies).
    extra_metrics: metrics only this family has (e.g. unparseable_rate, coverage).
    """

    predictions: pl.DataFrame
    info: dict = field(default_factory=dict)
    extra_metrics: dict = field(default_factory=dict)
