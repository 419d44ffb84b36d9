"""Study configuration: schema validation with defaults, semantic checks, and the list of runs.

Everything here is light (no torch), because the Snakefile imports it on every invocation.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

# Which implementation family a strategy belongs to; the family decides the Snakemake rule (and so the
# resources a job asks for) and which model kinds it accepts.
FAMILIES = {
    "baseline": ["majority", "tfidf", "lm_dictionary", "hiv4_dictionary", "learned_dictionary"],
    "encoder": ["head", "top_k", "full", "lora", "qlora"],
    "embedding": ["embedding_zero_shot", "embedding_few_shot"],
    "icl": ["icl"],
    "seq2seq": ["seq2seq_lora", "seq2seq_qlora"],
}
STRATEGY_FAMILY = {s: fam for fam, strategies in FAMILIES.items() for s in strategies}
MODEL_KINDS = {
    "baseline": set(),
    "encoder": {"encoder"},
    "embedding": {"encoder"},
    "icl": {"seq2seq", "causal", "api"},
    "seq2seq": {"seq2seq"},
}
NO_MODEL = "none"


class ConfigError(ValueError):
    """A config problem, named by its key path."""


def _schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _validator_with_defaults():
    """Draft 2020-12 validator that also fills `default` values (the jsonschema FAQ recipe)."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate(config: dict, source: str = "config") -> dict:
    """Return a resolved copy of `config` (defaults filled) or raise ConfigError naming the key."""
    config = copy.deepcopy(config)
    validator = _validator_with_defaults()(_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), e.message))
    if errors:
        # The deepest error is the most specific one; if/then branches report their inner errors.
        err = max(errors, key=lambda e: len(e.absolute_path))
        raise ConfigError(f"{source}: config key '{_key(err.absolute_path)}': {err.message}")
    _check_semantics(config, source)
    return config


def load(path: str | os.PathLike, overrides: dict | None = None) -> dict:
    with open(path) as f:
        try:
            config = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if overrides:
        config.update(overrides)
    return validate(config, source=str(path))


def _check_semantics(config: dict, source: str) -> None:
    datasets, models, methods = config["datasets"], config["models"], config["methods"]
    for name, ds in datasets.items():
        where = f"{source}: config key 'datasets.{name}"
        if ds["task"] == "classification" and "labels" not in ds:
            raise ConfigError(f"{where}.labels': a classification dataset needs its ordered label names")
        if ds["loader"] == "table":
            cols = ds["columns"]
            need = "label" if ds["task"] == "classification" else "target"
            if need not in cols:
                raise ConfigError(f"{where}.columns.{need}': loader 'table' needs the {need} column's name")
        if ds["split"]["method"] == "column" and "column" not in ds["split"]:
            raise ConfigError(f"{where}.split.column': split method 'column' needs the column's name")
    for name, model in models.items():
        where = f"{source}: config key 'models.{name}"
        path = model["path"]
        if model["kind"] != "api" and _looks_local(path) and not Path(path).exists():
            raise ConfigError(f"{where}.path': model folder '{path}' does not exist")
        if model["kind"] == "api" and "base_url" not in model:
            raise ConfigError(f"{where}.base_url': an api model needs the endpoint's base URL")
    for i, block in enumerate(config["study"]):
        where = f"{source}: config key 'study.{i}"
        for ds in block["datasets"]:
            if ds not in datasets:
                raise ConfigError(f"{where}.datasets': unknown dataset '{ds}' (known: {', '.join(datasets)})")
        for m in block.get("models", []):
            if m not in models:
                raise ConfigError(f"{where}.models': unknown model '{m}' (known: {', '.join(models) or 'none'})")
        for meth in block["methods"]:
            if meth not in methods:
                raise ConfigError(f"{where}.methods': unknown method '{meth}' (known: {', '.join(methods)})")
            family = STRATEGY_FAMILY[methods[meth]["strategy"]]
            kinds = MODEL_KINDS[family]
            block_models = block.get("models", [])
            if not kinds and block_models:
                raise ConfigError(f"{where}.models': method '{meth}' uses no pretrained model; "
                                  f"put it in a study block without models")
            if kinds and not block_models:
                raise ConfigError(f"{where}.models': method '{meth}' needs a model of kind {sorted(kinds)}")
            for m in block_models:
                if models[m]["kind"] not in kinds:
                    raise ConfigError(f"{where}': method '{meth}' ({methods[meth]['strategy']}) needs a model "
                                      f"of kind {sorted(kinds)}, but '{m}' is {models[m]['kind']}")
        for ds in block["datasets"]:
            task = datasets[ds]["task"]
            for meth in block["methods"]:
                strategy = methods[meth]["strategy"]
                if task == "regression" and strategy in ("embedding_zero_shot", "embedding_few_shot"):
                    raise ConfigError(f"{where}': method '{meth}' ({strategy}) is for classification, "
                                      f"but dataset '{ds}' is regression")


def _looks_local(path: str) -> bool:
    """A hub id is 'name' or 'org/name'; anything else that is not `package:` is a local path."""
    if path.startswith("package:"):
        return False
    return path.startswith((".", "/", "~")) or path.count("/") > 1 or Path(path).exists()


@dataclass(frozen=True)
class Run:
    dataset: str
    model: str
    method: str
    seed: int

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.model}/{self.method}/seed{self.seed}"


def runs(config: dict) -> list[Run]:
    """Every (dataset, model, method, seed) the study asks for, without duplicates, in config order."""
    out: dict[Run, None] = {}
    for block in config["study"]:
        seeds = block.get("seeds", config["seeds"])
        models = block.get("models") or [NO_MODEL]
        for ds in block["datasets"]:
            for model in models:
                if model != NO_MODEL and not model_enabled(config["models"][model]):
                    continue
                for method in block["methods"]:
                    for seed in seeds:
                        out[Run(ds, model, method, seed)] = None
    return list(out)


def model_enabled(model: dict) -> bool:
    env = model.get("enabled_if_env")
    return not env or bool(os.environ.get(env))


def family(config: dict, method: str) -> str:
    return STRATEGY_FAMILY[config["methods"][method]["strategy"]]
