"""The registry of method families and their strategies: config validation, the schema, the estimate, the report,
the runner, the jobs and the Snakemake rules read it, and nothing else names a strategy.

A **family** is a set of strategies that share an implementation module (with `run(spec) -> RunOutput`, and
`select(spec)` for trained families), a Snakemake rule (so the same resources, threads and conda environment),
the model kinds they accept and the config block that holds their keys (`$defs/<schema>` in
workflow/schemas/config.schema.yaml).

A **strategy** is one registered `Strategy`: its config defaults, what it reads besides the prepared table, the
facts other layers ask about it (does it train at a learning rate chosen on dev, is its base 4-bit, does it take
LoRA keys, how the report groups it, which method key counts training examples) and, where its family's module
does not do it alone, the functions that build and run it ("module:function", imported on first use). Adding a
strategy is one `Strategy` entry plus its code (in its family's module, or a module of its own); a new family
is one more `Family` (and a `$defs` block for its keys).

How a run travels: rule (runs.smk, one per family) → `jobs.run_method` → `runner.execute` →
`Strategy.load("run")` → `<module>.run(spec)`; a learning-rate selection: rule tune_<family> →
`jobs.select_learning_rate` → `runner.select` → `<module>.select(spec)`. Modules are imported only when a run
needs them, so a baseline never pays torch's import time.

Inputs a strategy can name (resolved to files by workflow/rules/common.smk):
  tokenized      the dataset's token ids for the model (rule tokenize)
  features       the frozen encoder's pooled features, pooled as the method/model says (rule encode_features)
  mean_features  the same with mean pooling (embedding methods compare sentence embeddings)
  lexicon        the Loughran-McDonald word list
Inputs that follow from a method's or model's keys rather than its strategy (a retriever's embeddings for
`selection: similar`, a converted GGUF checkpoint, a learning-rate selection) are added by common.smk for any
family.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

TASKS = frozenset({"classification", "regression"})
NO_MODEL = "none"   # the model folder of model-free runs: results/runs/{dataset}/none/{method}/...


def load_function(path: str):
    """The function a "module:function" path names, imported on first use."""
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class Family:
    name: str
    module: str                         # import path of the module with run(spec) -> RunOutput
    rule: str                           # the Snakemake rule that runs this family's jobs
    env: str                            # conda environment (envs/<env>.yaml)
    threads: int                        # threads the rule asks for (Snakemake caps them at --cores)
    schema: str                         # $defs block of the config schema holding the method keys
    model_kinds: frozenset[str] = frozenset()   # empty: the methods use no pretrained model
    tasks: frozenset[str] = TASKS
    trains: bool = False                # gradient training: its module also has select(spec) (rule tune_<name>)

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(s.name for s in strategies() if s.family == self.name)

    def load(self, function: str = "run"):
        """The family module's `run(spec)` (or, for trained families, `select(spec)`), imported on first use."""
        return getattr(importlib.import_module(self.module), function)


@dataclass(frozen=True)
class Strategy:
    name: str
    family: str                         # the Family it belongs to (its rule, environment and module)
    defaults: dict = field(default_factory=dict)   # config defaults, before the schema's per-key ones
    inputs: tuple[str, ...] = ()        # input kinds besides the prepared table (see the module docstring)
    trains: bool = False                # trains at a learning rate that can be chosen on dev (rule tune_<family>)
    quantised: bool = False             # a 4-bit base (QLoRA): the estimate prices its steps apart
    lora: bool = False                  # takes peft's LoRA keys (tunebench.modeling.adapters)
    approach: str | None = None         # which side of "fine-tuning vs prompting" the report puts it on
    examples_key: str | None = None     # method key: labelled examples per prompt (at most the training rows)
    per_class_key: str | None = None    # method key: labelled examples per class (at most the smallest class)
    retrieves: bool = False             # may pick its examples by similarity (needs a `retriever` model)
    curve: str | None = None            # the report's few-shot curve its runs join: "prompts" or "embedding"
    word_weights: bool = False          # writes dictionary.csv, its words' weights (the report lists the strongest)
    run: str | None = None              # "module:function" of its run when not the family module's run
    trainable: str | None = None        # trained encoders: "module:function(model, cfg) -> model to train"

    @property
    def needs_features(self) -> bool:
        """Does it read the frozen encoder's cached features (rule encode_features) instead of training?"""
        return bool({"features", "mean_features"} & set(self.inputs))

    def load(self, function: str = "run"):
        """Its `run` (its own, or its family module's), or another function of its family's module."""
        if function == "run" and self.run:
            return load_function(self.run)
        return by_name(self.family).load(function)


ENCODER = "tunebench.methods.encoder"
TOKENIZED = ("tokenized",)
# Where the defaults come from: the encoder sweep in config/sweeps/encoder_lr.yaml (outcome: encoder_lr.csv, dev
# macro-F1 of each rate on FPB) centred the grids; every dataset then picks its own rate on dev from the grid
# (rule tune_<family>), and the report flags a choice on a grid edge. A method that sets `learning_rate` without
# `learning_rate_grid` trains at that rate: no grid is added (tunebench.config.strategy_defaults).
ADAPTER_RATES = {"learning_rate": 3.0e-3, "learning_rate_grid": [1.0e-3, 3.0e-3, 1.0e-2], "min_steps": 240}
GENERATIVE_RATES = {"learning_rate": 1.0e-3, "learning_rate_grid": None, "min_steps": 120}

FAMILIES: tuple[Family, ...] = (
    Family("baseline", "tunebench.methods.baselines", "run_baseline", "baselines", 1, schema="baseline_method"),
    Family("encoder", ENCODER, "finetune_encoder", "train", 8, schema="encoder_method",
           model_kinds=frozenset({"encoder"}), trains=True),
    Family("embedding", "tunebench.methods.embedding", "embed_fewshot", "train", 2, schema="embedding_method",
           model_kinds=frozenset({"encoder"}), tasks=frozenset({"classification"})),
    Family("icl", "tunebench.methods.icl", "prompt_llm", "train", 8, schema="icl_method",
           model_kinds=frozenset({"seq2seq", "causal", "api"})),
    Family("generative", "tunebench.methods.generative", "finetune_generative", "train", 8,
           schema="generative_method", model_kinds=frozenset({"seq2seq", "causal"}), trains=True),
)

STRATEGIES: tuple[Strategy, ...] = (
    Strategy("majority", "baseline"),
    Strategy("tfidf", "baseline"),
    Strategy("lm_dictionary", "baseline", inputs=("lexicon",)),
    Strategy("hiv4_dictionary", "baseline"),
    Strategy("learned_dictionary", "baseline", word_weights=True),
    Strategy("head", "encoder", inputs=("features",), approach="encoder, head on frozen features",
             run=f"{ENCODER}:run_head"),
    Strategy("top_k", "encoder", inputs=TOKENIZED, trains=True, approach="fine-tuned encoder",
             trainable=f"{ENCODER}:train_top_layers",
             defaults={"learning_rate": 3.0e-4, "learning_rate_grid": [1.0e-4, 3.0e-4, 1.0e-3], "min_steps": 240}),
    Strategy("full", "encoder", inputs=TOKENIZED, trains=True, approach="fine-tuned encoder",
             trainable=f"{ENCODER}:train_all",
             defaults={"learning_rate": 5.0e-5, "learning_rate_grid": [2.0e-5, 5.0e-5, 1.0e-4], "min_steps": 240}),
    Strategy("lora", "encoder", inputs=TOKENIZED, trains=True, lora=True, approach="fine-tuned encoder",
             trainable=f"{ENCODER}:add_adapters", defaults=ADAPTER_RATES),
    Strategy("qlora", "encoder", inputs=TOKENIZED, trains=True, lora=True, quantised=True,
             approach="fine-tuned encoder", trainable=f"{ENCODER}:add_adapters", defaults=ADAPTER_RATES),
    Strategy("embedding_zero_shot", "embedding", inputs=("mean_features",), curve="embedding"),
    Strategy("embedding_few_shot", "embedding", inputs=("mean_features",), per_class_key="shots", curve="embedding"),
    Strategy("icl", "icl", approach="prompting", examples_key="k", retrieves=True, curve="prompts"),
    Strategy("generative_lora", "generative", trains=True, lora=True, approach="fine-tuned generative",
             defaults=GENERATIVE_RATES),
    Strategy("generative_qlora", "generative", trains=True, lora=True, quantised=True,
             approach="fine-tuned generative", defaults=GENERATIVE_RATES),
)


def families() -> tuple[Family, ...]:
    """The registry, read at call time (so a test can extend it)."""
    return FAMILIES


def strategies() -> tuple[Strategy, ...]:
    return STRATEGIES


def strategy(name: str) -> Strategy:
    for s in strategies():
        if s.name == name:
            return s
    raise KeyError(f"unknown strategy '{name}' (known: {', '.join(all_strategies())})")


def family_of(strategy_name: str) -> Family:
    return by_name(strategy(strategy_name).family)


def by_name(name: str) -> Family:
    for fam in families():
        if fam.name == name:
            return fam
    raise KeyError(f"unknown family '{name}'")


def by_rule(rule: str) -> Family | None:
    return next((fam for fam in families() if fam.rule == rule), None)


def all_strategies() -> list[str]:
    """Every strategy, family by family in the registry's order."""
    return [s for fam in families() for s in fam.strategies]
