"""Training plumbing every trained strategy shares (encoder fine-tuning and generative fine-tuning alike).

The Hugging Face Trainer does the work: dynamic padding, length-grouped batches, warmup + linear decay, weight
decay, evaluation and checkpoints every epoch, early stopping on the dev metric with the best checkpoint
restored, bf16 autocast where the hardware has it, and resuming from the run folder's last checkpoint. This
module only sets it up the same way for every strategy, and adds what the Trainer lacks: a step budget for
small datasets (`min_steps`), learning-rate selection on dev, predictions in dataset order, one quantisation
config for QLoRA, and the cost facts every run records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tunebench import __version__, hardware, selection
from tunebench.modeling.loading import count_parameters
from tunebench.spec import RunSpec


def dev_metric(task: str) -> tuple[str, bool]:
    """(metric for early stopping and best-checkpoint selection, greater is better)."""
    return ("macro_f1", True) if task == "classification" else ("mse", False)


def resolve_precision(precision: str) -> str:
    """`auto` → bf16 autocast where the hardware has fast bf16 (A100, avx512_bf16 / AMX CPUs), else fp32.
    An explicit `bf16` on hardware without it falls back to fp32 (emulated bf16 is many times slower)."""
    fast = hardware.bf16_fast()
    if precision == "bf16" and not fast:
        print("precision bf16 requested but this hardware has no fast bf16: training in fp32")
    return "bf16" if precision != "fp32" and fast else "fp32"


def compute_dtype(name: str) -> torch.dtype:
    """The dtype of QLoRA's 4-bit matmuls: `auto` is bf16 where the hardware has it, fp32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if hardware.bf16_fast() else torch.float32
    return getattr(torch, name)


def quantization_config(cfg: dict, skip_modules: list[str]):
    """4-bit NF4 (or FP4) weights for QLoRA (Dettmers et al. 2023). Modules that must train in full precision
    (a new head, a pooler that sits before it) are left unquantised: bitsandbytes cannot train through them."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg["quant_type"],
                              bnb_4bit_use_double_quant=cfg["double_quant"],
                              bnb_4bit_compute_dtype=compute_dtype(cfg["compute_dtype"]),
                              llm_int8_skip_modules=skip_modules or None)


def count_4bit_modules(model: nn.Module) -> int:
    """How many linear layers hold 4-bit weights (recorded by every QLoRA run: the base really was 4-bit)."""
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def one_4bit_kernel(model: nn.Module) -> None:
    """Make 4-bit layers compute with the same kernel in evaluation as in training. On avx512_bf16 CPUs
    bitsandbytes repacks the weights for a fused inference kernel the first time a layer runs in eval mode
    without gradients — but not when the inputs carry gradients (as after training, through the input hook
    peft installs), so a model evaluated after training and the same adapter reloaded would differ in the
    third decimal. One kernel keeps a saved adapter's predictions equal to the run's."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def cache_dequantized_base(model: nn.Module, setting: str = "auto") -> int:
    """Dequantise each frozen 4-bit linear layer once and compute with that copy from then on.

    bitsandbytes dequantises every 4-bit weight in every forward and again in every backward; on CPUs without
    its AVX-512 kernels that runs scalar code and makes QLoRA many times slower than LoRA. The base is frozen, so
    dequantising it once gives the same weights: the adapters still train on exactly dequant(NF4(W)), as QLoRA
    defines it, with the 4-bit weights kept as they are. The cost is memory (a dense copy per layer), which is why
    `auto` uses it only where the slow kernels would run (CPU without AVX-512). Returns the layers cached."""
    import bitsandbytes as bnb

    if setting == "off" or (setting == "auto" and hardware.fast_4bit_kernels()):
        return 0
    cached = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and not hasattr(module, "dequantized_weight"):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            dtype = module.compute_dtype or weight.dtype
            module.register_buffer("dequantized_weight", weight.to(dtype), persistent=False)
            module.forward = _DenseForward(module)
            cached += 1
    return cached


class _DenseForward:
    """Linear4bit.forward with the weight dequantised in advance (same dtype handling as bitsandbytes': the
    input is cast to the compute dtype and the output back to the input's dtype)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.module.dequantized_weight
        bias = self.module.bias.to(weight.dtype) if self.module.bias is not None else None
        return nn.functional.linear(x.to(weight.dtype), weight, bias).to(x.dtype)


def qlora_path(model: nn.Module) -> str:
    """Which 4-bit code path ran, for the run's record."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if layers and all(hasattr(m, "dequantized_weight") for m in layers):
        return "4-bit base dequantised once (dense cache)"
    return "bitsandbytes matmul_4bit (dequantised every forward and backward)"


def epochs_for(spec: RunSpec, train_rows: int) -> float:
    """`epochs`, raised where needed so that training takes at least `min_steps` optimizer steps: a small
    dataset (SemEval: 29 batches an epoch) would otherwise give adapters too few updates to learn."""
    cfg = spec.method_cfg
    steps_per_epoch = math.ceil(train_rows / cfg["batch_size"])
    return max(cfg["epochs"], math.ceil((cfg.get("min_steps") or 0) / steps_per_epoch))


def training_arguments(spec: RunSpec, output_dir: Path, metric: str, greater: bool, group_by_length: bool = True,
                       **overrides):
    from transformers import TrainingArguments

    cfg = spec.settings
    args = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg["batch_size"],
        per_device_eval_batch_size=cfg["eval_batch_size"],
        learning_rate=cfg["learning_rate"],
        num_train_epochs=cfg["epochs"],
        warmup_steps=cfg["warmup_ratio"],  # a float below 1 is a fraction of the steps in transformers 5
        weight_decay=cfg["weight_decay"],
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        bf16=resolve_precision(cfg["precision"]) == "bf16",
        use_cpu=not torch.cuda.is_available(),
        seed=spec.seed,
        data_seed=spec.seed,
        logging_steps=cfg["logging_steps"],
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    args.update(overrides)
    return TrainingArguments(**args)


def checkpoint_dir(spec: RunSpec, name: str = "checkpoints") -> Path:
    """The run's checkpoint folder, emptied if it holds checkpoints of different settings."""
    path = spec.run_dir / name
    fingerprint = hashlib.sha256(json.dumps(
        [spec.dataset_cfg, spec.model_cfg, spec.settings, spec.seed, __version__], sort_keys=True,
        default=str).encode()).hexdigest()
    marker = path / "settings.sha256"
    if path.exists() and (not marker.exists() or marker.read_text() != fingerprint):
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
    return path


def last_checkpoint(path: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(path)) if path.exists() else None


def fit(model, train, dev, spec: RunSpec, collator, compute_metrics=None, metric: str | None = None,
        greater: bool | None = None, group_by_length: bool = True, checkpoints: str = "checkpoints",
        trainer_class=None, **arg_overrides):
    """Train with the Trainer (early stopping, best checkpoint restored, resume).

    `metric` is the dev metric that picks the best checkpoint (default: the task's, see dev_metric; "loss" for
    the Trainer's own dev loss). Returns (trainer, train seconds, the checkpoint it resumed from or None).
    """
    from transformers import EarlyStoppingCallback, Trainer

    default_metric, default_greater = dev_metric(spec.task)
    metric = metric or default_metric
    greater = default_greater if greater is None else greater
    out = checkpoint_dir(spec, checkpoints) if not spec.settings.get("max_steps") else spec.run_dir
    # A trial's step limit must reach the Trainer: without it every trial ran the full budget (and the trace
    # still said trial_fraction).
    args = training_arguments(spec, out, metric, greater, group_by_length,
                              **{"num_train_epochs": epochs_for(spec, len(train)), **trial_overrides(spec),
                                 **arg_overrides})
    patience = spec.settings.get("early_stopping_patience")
    callbacks = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []
    trainer = (trainer_class or Trainer)(model=model, args=args, train_dataset=train, eval_dataset=dev,
                                         data_collator=collator, compute_metrics=compute_metrics,
                                         callbacks=callbacks)
    if spec.trained_dir:
        return trainer, *reuse_trained(model, trainer, Path(spec.trained_dir))
    resume = last_checkpoint(out)
    if resume:
        print(f"resuming from {resume}")
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    return trainer, time.perf_counter() - t0, resume


def predict_in_order(trainer, dataset) -> np.ndarray:
    """Logits in the dataset's row order.

    With length grouping on, the Trainer also evaluates in a length-grouped (permuted) order; its own metrics do
    not mind, but predictions joined to ids by position would be scrambled. Predict sequentially instead.
    """
    trainer.args.train_sampling_strategy = "random"  # affects only the eval sampler now: sequential
    return trainer.predict(dataset).predictions


# --- learning-rate trials on dev ---------------------------------------------------------------------------------
#
# The protocol is tunebench.selection's (grid growing past its edge, the mean over selection seeds, a stability
# tie rule, optional successive halving, which trials are kept); this part only turns a (rate, seed, fraction)
# into a trial. A full-length trial (fraction 1, the default) is the final run's own recipe — same seed, data,
# schedule, early stopping and best-checkpoint restore — so the trial at the chosen rate *is* that seed's run: its
# trained weights are kept (rule tune_<family>'s `.trained/seed<N>` folders) and the run of that seed evaluates
# them instead of training the same model again. Shorter trials are cheaper but choose differently
# (bench/trial_agreement.py); nothing is kept from them.

TRAINED = selection.TRAINED


def trial_spec(spec: RunSpec, learning_rate: float, train_rows: int, seed: int | None = None,
               fraction: float | None = None) -> RunSpec:
    """A trial at one learning rate and seed. Fraction 1: the final run's recipe. Below 1: that fraction of the
    final run's optimizer steps (the schedule squeezed to fit), no checkpoints or early stopping, scored on dev
    at its end. The trial's settings are chosen ones (RunSpec.chosen): the method config stays as it is."""
    cfg = spec.method_cfg
    seed = spec.seed if seed is None else seed
    fraction = cfg["trial_fraction"] if fraction is None else fraction
    chosen = {"learning_rate": learning_rate}
    if fraction < 1:
        steps = math.ceil(train_rows / cfg["batch_size"]) * epochs_for(spec, train_rows)
        chosen.update(early_stopping_patience=None, max_steps=max(1, math.ceil(fraction * steps)))
    name = f"trial-lr{learning_rate:g}-seed{seed}" + (f"-f{fraction:g}" if fraction < 1 else "")
    return dataclasses.replace(spec, seed=seed, chosen={**spec.chosen, **chosen}, run_dir=spec.run_dir / name)


def trial_overrides(spec: RunSpec) -> dict:
    """Trainer settings of a shortened trial (see trial_spec); empty for a full run or a full-length trial."""
    if not spec.settings.get("max_steps"):
        return {}
    return {"max_steps": spec.settings["max_steps"], "eval_strategy": "no", "save_strategy": "no",
            "load_best_model_at_end": False}


def keep_trained(spec: RunSpec, model: nn.Module, trainer, train_seconds: float) -> None:
    """After a full-length trial: its trained weights (those that training changed), the Trainer's state (steps,
    losses, best dev metric) and its training time, for the run of the same seed (see reuse_trained)."""
    if spec.settings.get("max_steps"):
        return
    folder = spec.run_dir / TRAINED
    folder.mkdir(parents=True, exist_ok=True)
    save_trainable(model, folder / "weights.safetensors")
    trainer.state.save_to_json(str(folder / "trainer_state.json"))
    (folder / "trial.json").write_text(json.dumps({"train_time_s": train_seconds, "seed": spec.seed,
                                                   "learning_rate": spec.settings["learning_rate"]}))


def reuse_trained(model: nn.Module, trainer, folder: Path) -> tuple[float, str]:
    """The chosen full-length trial's weights and Trainer state in place of training: (its training seconds,
    what the run reused)."""
    from transformers import TrainerState

    load_trainable(model, folder / "weights.safetensors")
    trainer.state = TrainerState.load_from_json(str(folder / "trainer_state.json"))
    print(f"reusing the selection trial at the chosen learning rate ({folder}): it was this run")
    return json.loads((folder / "trial.json").read_text())["train_time_s"], "selection trial"


def per_seed(spec: RunSpec, make):
    """A trial function over `make(spec_of_that_seed)` objects built once per seed (each seed caps and orders
    its training rows by itself, as its run will), calling their `.trial(trial_spec)`."""
    made = {}

    def trial(trial_run: RunSpec) -> float:
        if trial_run.seed not in made:
            made[trial_run.seed] = make(dataclasses.replace(spec, seed=trial_run.seed))
        return made[trial_run.seed].trial(trial_run)

    return trial


def select_learning_rate(spec: RunSpec, train_rows: int, trial) -> dict:
    """Search `learning_rate_grid` on dev (`trial(trial_spec) -> dev metric`) by tunebench.selection's protocol.
    Returns the selection trace every run of the method records: the rates tried (declared and grown), the dev
    metric per rate and seed, the chosen rate, whether it is still on an edge (only when the growth bound was
    hit), the halving rounds, and the cost. The full-length trials at the chosen rate leave their trained models
    in spec.run_dir / "trained" / "seed<N>" (see keep_trained)."""
    cfg = spec.method_cfg
    metric, greater = dev_metric(spec.task)
    search = selection.learning_rate_search(spec, greater)
    kept = spec.run_dir / TRAINED
    t0 = time.perf_counter()

    def score(lr: float, seed: int, fraction: float) -> float:
        trial_run = trial_spec(spec, lr, train_rows, seed, fraction)
        value = float(trial(trial_run))
        selection.keep_trial(kept, lr, seed, trial_run.run_dir)
        return value

    trace = selection.search_grid(search, score, log=lambda line: print(f"learning rate {line}", flush=True))
    chosen = trace["chosen"]
    reusable = selection.keep_chosen_trials(kept, chosen)
    return {**trace, "dev_metric": metric, "dev_by_learning_rate": trace["dev_by_value"],
            "trial_fraction": cfg["trial_fraction"],
            "trial_steps": trial_spec(spec, chosen, train_rows, fraction=trace["final_fraction"]).settings.get(
                "max_steps"),
            "trial_seeds": search.seeds, "reusable_by_seeds": reusable, "selection_time_s": time.perf_counter() - t0}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable(model: nn.Module, path: Path) -> None:
    """Weights that training changed (all of them for full; adapters + head for LoRA) as safetensors."""
    from safetensors.torch import save_file

    save_file(trainable_state(model), str(path))


def load_trainable(model: nn.Module, path: Path) -> nn.Module:
    from safetensors.torch import load_file

    missing = set(load_file(str(path))) - set(dict(model.named_parameters()))
    if missing:
        raise ValueError(f"{path}: weights for unknown parameters {sorted(missing)[:3]}")
    model.load_state_dict(load_file(str(path)), strict=False)
    return model


def drop_checkpoints(spec: RunSpec) -> None:
    """The checkpoints only served resuming (and a selection made in the run, its reused trial): a finished run
    keeps its predictions and metrics."""
    shutil.rmtree(spec.run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(spec.run_dir / TRAINED, ignore_errors=True)


def attention_implementation(model: nn.Module) -> str | None:
    """The attention kernels the model ran with (transformers' `_attn_implementation`: sdpa, eager, ...)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_attn_implementation", None):
            return config._attn_implementation
    return None


def cost_info(spec: RunSpec, model, trainer, train_seconds: float, eval_seconds: float, train_tokens: int,
              train_rows: int, resumed: str | None) -> dict:
    trainable, total = count_parameters(model)
    epochs = float(trainer.state.epoch or 0)
    info = {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_fraction": trainable / total if total else None,
        "train_time_s": train_seconds,
        "eval_time_s": eval_seconds,
        "epochs_run": epochs,
        "optimizer_steps": int(trainer.state.global_step),
        "train_rows": train_rows,
        "tokens_per_s": train_tokens * epochs / train_seconds if train_seconds and train_tokens else None,
        "best_dev_metric": trainer.state.best_metric,
        "dev_metric": trainer.args.metric_for_best_model,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "precision": "bf16" if trainer.args.bf16 else "fp32",
        "attention": attention_implementation(model),
        "resumed_from": Path(resumed).name if resumed else None,
        "train_losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
    }
    if torch.cuda.is_available():
        info["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return info
