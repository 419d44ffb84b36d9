"""LoRA adapters: a method's LoRA keys go to peft's `LoraConfig` under peft's own names, so peft's documentation
is ours; `target_modules` left out takes peft's per-architecture choice (the attention query and value
projections). Also here: the one bitsandbytes warning every adapter run would print (see `quiet_bitsandbytes`).

No heavy import at module level: config.py reads the key names from here.
"""

from __future__ import annotations

import logging
import warnings

from tunebench import families

# The method keys handed to LoraConfig as they are (the schema describes each; peft documents them).
LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora", "use_dora",
             "modules_to_save", "layers_to_transform")
# Our earlier names, still read: each is renamed with a FutureWarning (shown to users, unlike DeprecationWarning).
DEPRECATED_ALIASES = {"alpha": "lora_alpha", "dropout": "lora_dropout"}

# Encoders that peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING leaves out (peft 0.21), named as the
# mapping names the others: the attention's query and value projections (ModernBERT fuses q, k and v into one).
MORE_TARGET_MODULES = {"distilbert": ["q_lin", "v_lin"], "modernbert": ["Wqkv"]}


class AdapterConfigError(ValueError):
    """A method's LoRA keys that cannot be used as given."""


def takes_lora_keys(strategy) -> bool:
    """Does the strategy (its registry entry, tunebench.families) take peft's LoRA keys?"""
    return strategy in families.all_strategies() and families.strategy(strategy).lora


def rename_deprecated(method: dict, where: str) -> dict:
    """The method with `alpha` / `dropout` renamed to peft's `lora_alpha` / `lora_dropout` (a FutureWarning says
    so); giving both names of one setting is refused, as either could be the one meant."""
    if not isinstance(method, dict) or not takes_lora_keys(method.get("strategy")):
        return method
    method = dict(method)
    for old, new in DEPRECATED_ALIASES.items():
        if old not in method:
            continue
        if new in method:
            raise AdapterConfigError(f"{where}.{old}': '{old}' is the old name of '{new}', and both are given; "
                                     f"keep '{new}'")
        warnings.warn(f"{where}.{old}' is deprecated: write '{new}' (peft's name); '{old}' is read as '{new}'",
                      FutureWarning, stacklevel=2)
        method[new] = method.pop(old)
    return method


def default_target_modules(model_type: str) -> list[str]:
    """peft's choice of modules for an architecture (`config.model_type`), where peft or we know one."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    targets = PEFT_TARGETS.get(model_type) or MORE_TARGET_MODULES.get(model_type)
    if not targets:
        raise AdapterConfigError(f"peft knows no default LoRA target modules for model type '{model_type}': set "
                                 f"the method's target_modules (module names, or all-linear)")
    return list(targets)


def lora_config(cfg: dict, model_type: str, task_type=None, modules_to_save=()):
    """The peft LoraConfig of a method's resolved config for a model of `model_type`; `modules_to_save` are the
    modules that train in full beside the adapters (a new head), before the method's own."""
    from peft import LoraConfig

    settings = {key: cfg[key] for key in LORA_KEYS if cfg.get(key) is not None}
    if settings.get("target_modules") is None:
        settings["target_modules"] = default_target_modules(model_type)
    elif isinstance(settings["target_modules"], list):
        settings["target_modules"] = list(settings["target_modules"])
    saved = [*modules_to_save, *[m for m in cfg.get("modules_to_save") or [] if m not in modules_to_save]]
    settings["modules_to_save"] = saved or None
    return LoraConfig(task_type=task_type, **settings)


# --- bitsandbytes' hub kernel warning ------------------------------------------------------------------------

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_HUB_KERNEL = "Failed to load CPU gemm_4bit_forward from kernels-community"
BNB_EXPLANATION = ("bitsandbytes: its optional fused CPU 4-bit kernel lives on the Hugging Face hub "
                   "(kernels-community), which is not loaded here (offline, and not on the trust list); "
                   "bitsandbytes' own CPU kernel runs instead, with the same results")
# With HF_HUB_OFFLINE=1 the `kernels` library first says it skips the trust check of that same attempt.
KERNELS_LOGGER = "kernels._internals.hf_hub"
KERNELS_OFFLINE = "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"


class _HubKernelFilter(logging.Filter):
    """At `import bitsandbytes` on CPUs with AVX-512 BF16 (whatever the run), bitsandbytes tries to fetch a fused
    kernel from the hub through `kernels`, fails (no network, repository not trusted) and logs advice to set
    trust_remote_code. This filter turns that record into one line that says what it means and drops the
    `kernels` line about the same attempt; other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(KERNELS_OFFLINE):
            return False
        if message.startswith(BNB_HUB_KERNEL):
            record.msg, record.args = BNB_EXPLANATION, ()
        return True


def quiet_bitsandbytes() -> None:
    """Install the filter (idempotent). It must run before bitsandbytes is first imported (peft imports it)."""
    for name in (BNB_CPU_LOGGER, KERNELS_LOGGER):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HubKernelFilter) for f in logger.filters):
            logger.addFilter(_HubKernelFilter())
