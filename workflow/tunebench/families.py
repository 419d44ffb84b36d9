"""The method families, in one place: config validation, the runner, the jobs and the Snakemake rules read them.

A family is a set of strategies that share an implementation module (with `run(spec) -> RunOutput`), a
Snakemake rule (so the same resources, threads and conda environment), the model kinds they accept, the
config block that holds their keys (`$defs/<schema>` in workflow/schemas/config.schema.yaml) and the inputs
they read besides the prepared table. Adding a strategy to a family is its entry here plus its code in the
family's module; a new family is one more `Family` (and a `$defs` block for its keys).

How a run travels: rule (runs.smk, one per family) → `jobs.run_method` → `runner.execute` →
`Family.load("run")` → `<module>.run(spec)`; a learning-rate selection: rule tune_<family> →
`jobs.select_learning_rate` → `runner.select` → `<module>.select(spec)`. Modules are imported only when a run needs them, so a baseline
never pays torch's import time.

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


@dataclass(frozen=True)
class Family:
    name: str
    module: str                         # import path of the module with run(spec) -> RunOutput
    rule: str                           # the Snakemake rule that runs this family's jobs
    env: str                            # conda environment (envs/<env>.yaml)
    threads: int                        # threads the rule asks for (Snakemake caps them at --cores)
    strategies: tuple[str, ...]
    schema: str                         # $defs block of the config schema holding the method keys
    model_kinds: frozenset[str] = frozenset()   # empty: the methods use no pretrained model
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)   # strategy or "*" → input kinds
    tasks: frozenset[str] = TASKS
    trains: bool = False                # gradient training: its module also has select(spec) (rule tune_<name>)

    def inputs_of(self, strategy: str) -> tuple[str, ...]:
        return self.inputs.get(strategy, self.inputs.get("*", ()))

    def load(self, function: str = "run"):
        """The family module's `run(spec)` (or, for trained families, `select(spec)`), imported on first use."""
        return getattr(importlib.import_module(self.module), function)


FAMILIES: tuple[Family, ...] = (
    Family("baseline", "tunebench.methods.baselines", "run_baseline", "baselines", 1,
           ("majority", "tfidf", "lm_dictionary", "hiv4_dictionary", "learned_dictionary"),
           schema="baseline_method", inputs={"lm_dictionary": ("lexicon",)}),
    Family("encoder", "tunebench.methods.encoder", "finetune_encoder", "train", 8,
           ("head", "top_k", "full", "lora", "qlora"),
           schema="encoder_method", model_kinds=frozenset({"encoder"}),
           inputs={"head": ("features",), "*": ("tokenized",)}, trains=True),
    Family("embedding", "tunebench.methods.embedding", "embed_fewshot", "train", 2,
           ("embedding_zero_shot", "embedding_few_shot"),
           schema="embedding_method", model_kinds=frozenset({"encoder"}), inputs={"*": ("mean_features",)},
           tasks=frozenset({"classification"})),
    Family("icl", "tunebench.methods.icl", "prompt_llm", "train", 8, ("icl",),
           schema="icl_method", model_kinds=frozenset({"seq2seq", "causal", "api"})),
    Family("generative", "tunebench.methods.generative", "finetune_generative", "train", 8,
           ("generative_lora", "generative_qlora"),
           schema="generative_method", model_kinds=frozenset({"seq2seq", "causal"}), trains=True),
)


def families() -> tuple[Family, ...]:
    """The registry, read at call time (so a test can extend it)."""
    return FAMILIES


def family_of(strategy: str) -> Family:
    for fam in families():
        if strategy in fam.strategies:
            return fam
    raise KeyError(f"unknown strategy '{strategy}' (known: {', '.join(all_strategies())})")


def by_name(name: str) -> Family:
    for fam in families():
        if fam.name == name:
            return fam
    raise KeyError(f"unknown family '{name}'")


def by_rule(rule: str) -> Family | None:
    return next((fam for fam in families() if fam.rule == rule), None)


def all_strategies() -> list[str]:
    return [s for fam in families() for s in fam.strategies]
