"""Study configuration: schema validation with defaults, semantic checks, and the list of runs.

Everything here is light (no torch), because the Snakefile imports it on every invocation.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from tunebench import families, paths
from tunebench.evaluation import answers
from tunebench.modeling import adapters, sources

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

NO_MODEL = families.NO_MODEL


class ConfigError(ValueError):
    """A config problem, named by its key path."""


def _schema() -> dict:
    """The schema file, with the method block's strategy list and per-family key blocks filled in from the
    family registry (tunebench.families), so that no strategy is named in two places."""
    with open(SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)
    method = schema["$defs"]["method"]
    method["properties"]["strategy"]["enum"] = families.all_strategies()
    method["allOf"] = [{"if": {"properties": {"strategy": {"enum": list(fam.strategies)}}},
                        "then": {"$ref": f"#/$defs/{fam.schema}"}} for fam in families.families()]
    return schema


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

    # JSON Schema counts 1.0 as an integer; YAML reads `seed: 1.0` as a float, which would then name a run
    # folder `seed1.0`. Only a true int (not a bool) is an integer here.
    strict_integers = base.TYPE_CHECKER.redefine(
        "integer", lambda checker, x: isinstance(x, int) and not isinstance(x, bool))
    return jsonschema.validators.extend(base, {"properties": set_defaults}, type_checker=strict_integers)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(err) -> str:
    """The key and what was expected, in the user's words: unknown keys name the closest allowed one."""
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(err.schema.get("properties", {}))
        unknown = [k for k in err.instance if k not in allowed][0]
        close = difflib.get_close_matches(str(unknown), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return (f"config key '{_key([*err.absolute_path, unknown])}': unknown key{hint}; "
                f"allowed keys: {', '.join(allowed)}")
    if "propertyNames" in err.schema_path:
        return (f"config key '{_key(err.absolute_path)}': name {err.instance!r} is not allowed: names become "
                f"folders under results/, so they hold only letters, digits, '_' and '-' and start with a "
                f"letter or digit")
    return f"config key '{_key(err.absolute_path)}': {err.message}"


def strategy_defaults(method: dict) -> dict:
    """The method with its strategy's defaults (tunebench.families: Strategy.defaults) filled where it leaves
    them out. An explicit learning_rate without a grid means "train at this rate": no default grid is added then.
    An unknown strategy is left to the schema to name."""
    if not isinstance(method, dict):
        return method
    known = method.get("strategy") in families.all_strategies()
    defaults = copy.deepcopy(families.strategy(method["strategy"]).defaults) if known else {}
    if "learning_rate" in method and "learning_rate_grid" not in method:
        defaults["learning_rate_grid"] = None
    return {**defaults, **method}


def validate(config: dict, source: str = "config") -> dict:
    """Return a resolved copy of `config` (defaults filled) or raise ConfigError naming the key."""
    config = copy.deepcopy(config)
    schema = _schema()
    if isinstance(config.get("methods"), dict):
        try:
            config["methods"] = {name: adapters.rename_deprecated(m, f"{source}: config key 'methods.{name}")
                                 for name, m in config["methods"].items()}
        except adapters.AdapterConfigError as e:
            raise ConfigError(str(e)) from None
        config["methods"] = {name: strategy_defaults(m) for name, m in config["methods"].items()}
    validator = _validator_with_defaults()(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), e.message))
    if errors:
        # The deepest error is the most specific one; if/then branches report their inner errors.
        err = max(errors, key=lambda e: len(e.absolute_path))
        raise ConfigError(f"{source}: {_describe(err)}")
    _check_semantics(config, source)
    return _sorted_keys(config)


def _sorted_keys(obj):
    """Mappings with their keys in sorted order, lists as they are: Snakemake compares a job's params as
    serialised, so reordering keys in a config file must not look like a change and rerun jobs."""
    if isinstance(obj, dict):
        return {k: _sorted_keys(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted_keys(x) for x in obj]
    return obj


def read(path: str | os.PathLike, seen: tuple = ()) -> dict:
    """A config file as written, with the file its `base` key names merged under it (see with_base)."""
    with open(path) as f:
        try:
            config = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of keys, not a {type(config).__name__}")
    return with_base(config, path, seen)


def with_base(config: dict, path: str | os.PathLike, seen: tuple = ()) -> dict:
    """`base: other.yaml` (relative to the file that says it): that file's config with this one's keys over it,
    so one study can size another down without repeating its datasets and methods (config/config.yaml over
    config/study.yaml). Mappings merge key by key; a list or a value replaces the base's."""
    base = config.get("base")
    if not base:
        return config
    base_path = (Path(path).parent / base).resolve()
    if base_path in seen or base_path == Path(path).resolve():
        raise ConfigError(f"{path}: config key 'base': '{base}' leads back to a file that names it as base")
    if not base_path.exists():
        raise ConfigError(f"{path}: config key 'base': no such file {base_path}")
    merged = merge(read(base_path, (*seen, Path(path).resolve())), config)
    merged.pop("base", None)
    return merged


def merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else \
            copy.deepcopy(value)
    return out


def load(path: str | os.PathLike, overrides: dict | None = None) -> dict:
    config = read(path)
    if overrides:
        config.update(overrides)
    return validate(config, source=str(path))


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _check_semantics(config: dict, source: str) -> None:
    datasets, models, methods = config["datasets"], config["models"], config["methods"]
    # The schema's name pattern ends in '$', which Python's re (used by jsonschema) also matches before a final
    # newline: check the whole name, as it becomes a folder under results/.
    for section in ("datasets", "models", "methods"):
        for name in config[section]:
            if not NAME.fullmatch(name):
                raise ConfigError(f"{source}: config key '{section}': name {name!r} is not allowed: names become "
                                  f"folders under results/, so they hold only letters, digits, '_' and '-'")
    for i, name in enumerate(config.get("skip_methods", [])):
        if name not in methods:
            raise ConfigError(f"{source}: config key 'skip_methods[{i}]': unknown method '{name}' (methods: "
                              f"{', '.join(methods)})")
    for name, ds in datasets.items():
        where = f"{source}: config key 'datasets.{name}"
        _check_source(ds, where)
        if ds["task"] == "classification" and "labels" not in ds:
            raise ConfigError(f"{where}.labels': a classification dataset needs its ordered label names")
        if ds["loader"] == "table":
            cols = ds["columns"]
            need = "label" if ds["task"] == "classification" else "target"
            if need not in cols:
                raise ConfigError(f"{where}.columns.{need}': loader 'table' needs the {need} column's name")
        labels = ds.get("labels", [])
        if len(set(labels)) < len(labels):
            raise ConfigError(f"{where}.labels': label names repeat: {labels}")
        for raw, label in ds["label_map"].items():
            if labels and label not in labels:
                raise ConfigError(f"{where}.label_map.{raw}': maps to '{label}', which is not one of the "
                                  f"labels {labels}")
        for set_name, words in ds["verbalizers"].items():
            unknown = set(words) - set(labels)
            if unknown:
                raise ConfigError(f"{where}.verbalizers.{set_name}': names labels {sorted(unknown)} that are not "
                                  f"among the labels {labels}")
            _check_verbalizers({"verbalizers": {**{lab: lab for lab in labels}, **words}},
                               f"{where}.verbalizers.{set_name}")
        split = ds["split"]
        if split["method"] == "column" and "column" not in split:
            raise ConfigError(f"{where}.split.column': split method 'column' needs the column's name")
        if split["method"] == "random" and split["dev"] + split["test"] >= 1:
            raise ConfigError(f"{where}.split': dev ({split['dev']}) + test ({split['test']}) leave no "
                              f"training rows; expected a sum below 1")
        if split["method"] == "given" and not (ds["loader"] in ("tfns", "hf") or "split" in ds["columns"]):
            raise ConfigError(f"{where}.split.method': 'given' needs a source that marks the test rows: "
                              f"loader tfns or hf, or a `columns.split` column")
    for name, model in models.items():
        where = f"{source}: config key 'models.{name}"
        path = model["path"]
        if model["kind"] != "api" and _looks_local(path) and not Path(path).exists():
            raise ConfigError(f"{where}.path': model folder '{path}' does not exist")
        if model.get("gguf_file"):
            if model["kind"] not in ("causal", "seq2seq"):
                raise ConfigError(f"{where}.gguf_file': GGUF checkpoints are generative models (kind causal)")
            try:
                sources.check_gguf(model, where)
            except sources.ModelError as e:
                raise ConfigError(f"{source}: {e}") from None
        if model["kind"] == "api" and "base_url" not in model:
            raise ConfigError(f"{where}.base_url': an api model needs the endpoint's base URL")
    for name, method in methods.items():
        _check_verbalizers(method, f"{source}: config key 'methods.{name}")
        _check_learning_rate_from(methods, name, f"{source}: config key 'methods.{name}")
        if not families.strategy(method["strategy"]).retrieves:
            continue
        where = f"{source}: config key 'methods.{name}"
        retriever = method.get("retriever")
        if method["selection"] == "similar" and not retriever:
            raise ConfigError(f"{where}.retriever': selection 'similar' needs an encoder model that embeds texts")
        if retriever and (retriever not in models or models[retriever]["kind"] != "encoder"):
            raise ConfigError(f"{where}.retriever': '{retriever}' is not an encoder model in `models` "
                              f"(encoders: {', '.join(m for m in models if models[m]['kind'] == 'encoder') or 'none'})")
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
            kinds = families.family_of(methods[meth]["strategy"]).model_kinds
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
                if task not in families.family_of(strategy).tasks:
                    raise ConfigError(f"{where}': method '{meth}' ({strategy}) is not for {task}, "
                                      f"but dataset '{ds}' is {task}")


HF_KEYS = ("name", "config", "revision", "data_files")


def _check_source(ds: dict, where: str) -> None:
    """Where a dataset's rows come from: `path` for the file loaders; for hf `name` (datasets' own word), which
    an hf dataset may still spell `path` (it becomes `name`)."""
    if ds["loader"] != "hf":
        if "path" not in ds:
            raise ConfigError(f"{where}.path': loader '{ds['loader']}' needs the file or folder of the raw data")
        for key in HF_KEYS:
            if ds.get(key) is not None:
                raise ConfigError(f"{where}.{key}': a key of loader hf (this dataset's loader is '{ds['loader']}')")
        return
    if "path" in ds:
        if ds.get("name", ds["path"]) != ds["path"]:
            raise ConfigError(f"{where}.path': for loader hf `path` is another spelling of `name`, and the two "
                              f"differ ('{ds['path']}', '{ds['name']}'); keep `name`")
        ds["name"] = ds.pop("path")
    if "name" not in ds:
        raise ConfigError(f"{where}.name': loader hf needs the dataset's name (a hub id, a local folder, or a "
                          f"builder such as parquet with data_files)")


def _check_verbalizers(method: dict, where: str) -> None:
    """Every answer word must be one the answer parser can read back as its label, or generated answers of that
    label would always count as unparsed."""
    for label, word in method.get("verbalizers", {}).items():
        others = {lab: w for lab, w in method["verbalizers"].items()}
        if not word.strip() or answers.parse_label(word, others) != label:
            raise ConfigError(f"{where}.verbalizers.{label}': the answer word {word!r} can never be read back "
                              f"as '{label}' by the answer parser (it needs a word of letters or digits that no "
                              f"other label's word contains)")


def _check_learning_rate_from(methods: dict, name: str, where: str) -> None:
    """`learning_rate_from` names a method of the same family whose rate is chosen on dev (it has a grid)."""
    method = methods[name]
    lender = method.get("learning_rate_from")
    if not lender:
        return
    if method.get("learning_rate_grid"):
        raise ConfigError(f"{where}.learning_rate_from': a method takes its learning rate either from its own "
                          f"learning_rate_grid or from another method's choice; set learning_rate_grid: null")
    if lender not in methods:
        raise ConfigError(f"{where}.learning_rate_from': unknown method '{lender}' (known: {', '.join(methods)})")
    family = families.family_of(method["strategy"])
    if families.family_of(methods[lender]["strategy"]) is not family or not methods[lender].get("learning_rate_grid"):
        raise ConfigError(f"{where}.learning_rate_from': '{lender}' must be a method of the {family.name} family "
                          f"whose learning rate is chosen on dev (one with a learning_rate_grid)")


def check_against_training_split(method: str, method_cfg: dict, dataset: str, train_labels: list) -> None:
    """Checks that need the training split's size, so they run at the start of a run rather than here at
    config time: a method may not ask for more labelled examples than the training split has.
    `train_labels` is the training split's label column (any values for regression: only its length counts)."""
    where = f"config key 'methods.{method}"
    strategy = families.strategy(method_cfg["strategy"])
    key = strategy.examples_key
    k = method_cfg.get(key) if key else None
    if k and k > len(train_labels):
        raise ConfigError(f"{where}.{key}': {k} demonstrations per prompt, but dataset '{dataset}' has "
                          f"{len(train_labels)} training rows; expected {key} ≤ {len(train_labels)}")
    key = strategy.per_class_key
    if key:
        counts = {label: train_labels.count(label) for label in sorted(set(train_labels))}
        smallest = min(counts, key=counts.get)
        if method_cfg[key] > counts[smallest]:
            raise ConfigError(f"{where}.{key}': {method_cfg[key]} examples per class, but class '{smallest}' "
                              f"has {counts[smallest]} training rows in dataset '{dataset}'; expected {key} ≤ "
                              f"{counts[smallest]}")


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
        """The run's place below results/runs (tunebench.paths)."""
        return paths.run_key(self.dataset, self.model, self.method, self.seed)


def runs(config: dict) -> list[Run]:
    """Every (dataset, model, method, seed) the study asks for, without duplicates, in config order (the
    methods of `skip_methods` left out)."""
    out: dict[Run, None] = {}
    skipped = set(config.get("skip_methods", []))
    for block in config["study"]:
        seeds = block.get("seeds", config["seeds"])
        models = block.get("models") or [NO_MODEL]
        for ds in block["datasets"]:
            for model in models:
                if model != NO_MODEL and not model_enabled(config["models"][model]):
                    continue
                for method in block["methods"]:
                    if method in skipped:
                        continue
                    for seed in seeds:
                        out[Run(ds, model, method, seed)] = None
    return list(out)


def model_enabled(model: dict) -> bool:
    env = model.get("enabled_if_env")
    return not env or bool(os.environ.get(env))


def family(config: dict, method: str) -> families.Family:
    return families.family_of(config["methods"][method]["strategy"])
