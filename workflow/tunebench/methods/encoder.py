"""Encoder fine-tuning: head-only, top-k, full, LoRA and QLoRA through one code path (the HF Trainer).

- head: the frozen encoder's pooled features are cached once (rule `encode_features`); only the head trains,
  on the cache. Equal to training through the frozen encoder in eval mode, at a fraction of the cost.
- top_k: the top k transformer layers (and whatever sits between them and the head) train with the head.
- full: every parameter trains (Wang 2024).
- lora / qlora: peft LoRA adapters (on a 4-bit NF4 base for qlora) plus a trainable head.
Classification trains with cross-entropy over the dataset's labels, regression with MSE on one output.
Training uses dynamic padding, length-grouped batches, warmup + linear decay, weight decay, early stopping on the
dev metric with the best checkpoint restored, and resumes from the run folder's last checkpoint.
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
import polars as pl
import torch
from torch import nn

from tunebench import __version__
from tunebench.evaluation import metrics
from tunebench.modeling.features import load_features
from tunebench.modeling.loading import EncoderClassifier, count_parameters, load_encoder, load_tokenizer
from tunebench.runner import RunOutput, RunSpec
from tunebench.modeling.tokenize import load_tokenized

ADAPTER_STRATEGIES = ("lora", "qlora")


# --- which parameters train ---------------------------------------------------------------------------------


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks (BERT's encoder.layer, and the like for other encoders)."""
    n = encoder.config.num_hidden_layers
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} transformer layers of {type(encoder).__name__}")


def between_encoder_and_head(model: EncoderClassifier) -> list[str]:
    """Modules that sit between the last layer and the head: they must train with the head."""
    return ["pooler"] if model.pooling == "cls" and getattr(model.encoder, "pooler", None) is not None else []


def apply_strategy(model: EncoderClassifier, strategy: str, cfg: dict) -> nn.Module:
    """Set requires_grad (or add adapters) for the strategy; return the model to train."""
    if strategy == "full":
        model.requires_grad_(True)
        return model
    if strategy == "top_k":
        model.requires_grad_(False)
        layers = encoder_layers(model.encoder)
        if not 1 <= cfg["k"] <= len(layers):
            raise ValueError(f"method key 'k' = {cfg['k']}: the encoder has {len(layers)} layers")
        for layer in layers[-cfg["k"]:]:
            layer.requires_grad_(True)
        for name in between_encoder_and_head(model):
            getattr(model.encoder, name).requires_grad_(True)
        model.classifier.requires_grad_(True)
        return model
    if strategy in ADAPTER_STRATEGIES:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"],
                          target_modules=list(cfg["target_modules"]),
                          modules_to_save=["classifier", *between_encoder_and_head(model)])
        return get_peft_model(model, lora)
    raise ValueError(f"unknown encoder strategy '{strategy}'")


def quantization_config(cfg: dict, pooling: str):
    """4-bit NF4 (QLoRA). The head is built outside the quantised encoder; a pooler that must train is skipped."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg["quant_type"],
        bnb_4bit_use_double_quant=cfg["double_quant"],
        bnb_4bit_compute_dtype=getattr(torch, cfg["compute_dtype"]),
        llm_int8_skip_modules=["pooler", "classifier"] if pooling == "cls" else ["classifier"],
    )


def build_model(spec: RunSpec) -> nn.Module:
    cfg = spec.method_cfg
    pooling = cfg.get("pooling") or spec.model_cfg["pooling"]
    num_labels = len(spec.labels) if spec.task == "classification" else 1
    if spec.strategy == "qlora":
        from peft import prepare_model_for_kbit_training

        encoder = load_encoder(spec.model_cfg, quantization_config(cfg, pooling))
        encoder = prepare_model_for_kbit_training(encoder, use_gradient_checkpointing=False)
    else:
        encoder = load_encoder(spec.model_cfg)
    torch.manual_seed(spec.seed)  # the head's initialisation
    model = EncoderClassifier(encoder, pooling, num_labels)
    return apply_strategy(model, spec.strategy, cfg)


# --- data ---------------------------------------------------------------------------------------------------


MODEL_INPUTS = ["input_ids", "attention_mask", "token_type_ids", "labels", "length"]


def with_labels(dataset, spec: RunSpec):
    """Keep the model inputs and add `labels`: the class index, or the regression target."""
    if spec.task == "classification":
        index = {name: i for i, name in enumerate(spec.labels)}
        dataset = dataset.map(lambda b: {"labels": [index[x] for x in b["label"]]}, batched=True)
    else:
        dataset = dataset.map(lambda b: {"labels": [float(x) for x in b["target"]]}, batched=True)
    return dataset.select_columns([c for c in MODEL_INPUTS if c in dataset["train"].column_names])


def cap_train(train, n: int | None, seed: int):
    return train if not n or n >= len(train) else train.shuffle(seed=seed).select(range(n))


# --- training -----------------------------------------------------------------------------------------------


def dev_metric(task: str) -> tuple[str, bool]:
    """(metric for early stopping and best-checkpoint selection, greater is better)."""
    return ("macro_f1", True) if task == "classification" else ("mse", False)


def compute_metrics_fn(spec: RunSpec):
    def compute(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if spec.task == "classification":
            gold = [spec.labels[i] for i in labels]
            pred = [spec.labels[i] for i in np.asarray(logits).argmax(-1)]
            return metrics.classification_scalars(gold, pred, spec.labels)
        return metrics.regression_scalars(labels, np.asarray(logits).reshape(-1))

    return compute


def use_bf16(precision: str) -> bool:
    """bf16 autocast where the hardware has it: A100-class GPUs, or CPUs with avx512_bf16."""
    if precision == "fp32":
        return False
    if torch.cuda.is_available():
        supported = torch.cuda.is_bf16_supported()
    else:
        try:
            supported = "avx512_bf16" in Path("/proc/cpuinfo").read_text()
        except OSError:
            supported = False
    if precision == "bf16" and not supported:
        print("precision bf16 requested but this hardware has no bf16 support: training in fp32")
    return supported


def epochs_for(spec: RunSpec, train_rows: int) -> float:
    """`epochs`, raised where needed so that training takes at least `min_steps` optimizer steps: a small
    dataset (SemEval: 29 batches an epoch) would otherwise give adapters too few updates to learn."""
    cfg = spec.method_cfg
    steps_per_epoch = math.ceil(train_rows / cfg["batch_size"])
    return max(cfg["epochs"], math.ceil((cfg.get("min_steps") or 0) / steps_per_epoch))


def training_arguments(spec: RunSpec, output_dir: Path, group_by_length: bool = True, **overrides):
    from transformers import TrainingArguments

    cfg = spec.method_cfg
    metric, greater = dev_metric(spec.task)
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
        bf16=use_bf16(cfg["precision"]),
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
        [spec.dataset_cfg, spec.model_cfg, spec.method_cfg, spec.seed, __version__], sort_keys=True,
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


def fit(model, train, dev, spec: RunSpec, collator, group_by_length: bool = True, checkpoints: str = "checkpoints",
        **arg_overrides):
    """Train with the Trainer (early stopping, best checkpoint restored, resume).

    Returns (trainer, train seconds, the checkpoint it resumed from or None).
    """
    from transformers import EarlyStoppingCallback, Trainer

    out = checkpoint_dir(spec, checkpoints)
    args = training_arguments(spec, out, group_by_length, num_train_epochs=epochs_for(spec, len(train)),
                              **arg_overrides)
    patience = spec.method_cfg.get("early_stopping_patience")
    callbacks = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, data_collator=collator,
                      compute_metrics=compute_metrics_fn(spec), callbacks=callbacks)
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


def predictions_frame(spec: RunSpec, ids, logits: np.ndarray) -> pl.DataFrame:
    logits = np.asarray(logits, dtype=np.float64)
    if spec.task == "regression":
        return pl.DataFrame({"id": list(ids), "prediction": logits.reshape(-1)})
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    frame = {"id": list(ids), "prediction": [spec.labels[i] for i in probs.argmax(-1)]}
    frame.update({f"score_{lab}": probs[:, i] for i, lab in enumerate(spec.labels)})
    return pl.DataFrame(frame)


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


def finish(spec: RunSpec, model) -> None:
    """Keep the trained weights if asked; the checkpoints only served resuming."""
    if spec.method_cfg.get("save_weights"):
        save_trainable(model, spec.run_dir / "weights.safetensors")
    shutil.rmtree(spec.run_dir / "checkpoints", ignore_errors=True)


def select_learning_rate(spec: RunSpec, train_once):
    """Train once per learning rate of `learning_rate_grid` (else once, at `learning_rate`); keep the best on dev.

    `train_once(trial_spec, checkpoints)` → (model, trainer, seconds, resumed). Each learning rate has its own
    checkpoint folder, so a restarted job resumes the trial it was in. Returns the best trial's (model, trainer,
    resumed), the total training seconds and the dev metric per learning rate.
    """
    cfg = spec.method_cfg
    grid = cfg.get("learning_rate_grid") or [cfg["learning_rate"]]
    greater = dev_metric(spec.task)[1]
    best, best_score, seconds, scores = None, None, 0.0, {}
    for lr in grid:
        trial = dataclasses.replace(spec, method_cfg={**cfg, "learning_rate": lr})
        model, trainer, trial_seconds, resumed = train_once(
            trial, "checkpoints" if len(grid) == 1 else f"checkpoints/lr{lr:g}")
        seconds += trial_seconds
        score = trainer.state.best_metric
        scores[f"{lr:g}"] = score
        if best is None or (score > best_score if greater else score < best_score):
            best, best_score = (model, trainer, resumed), score
    return best, seconds, scores


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
        "train_rows": train_rows,
        "tokens_per_s": train_tokens * epochs / train_seconds if train_seconds else None,
        "best_dev_metric": trainer.state.best_metric,
        "dev_metric": dev_metric(spec.task)[0],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "precision": "bf16" if trainer.args.bf16 else "fp32",
        "resumed_from": Path(resumed).name if resumed else None,
        "train_losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
    }
    if torch.cuda.is_available():
        info["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return info


def run(spec: RunSpec) -> RunOutput:
    from transformers import DataCollatorWithPadding, set_seed

    torch.set_num_threads(spec.threads)
    set_seed(spec.seed)
    if spec.strategy == "head":
        return run_head(spec)
    cfg = spec.method_cfg
    tokenizer = load_tokenizer(spec.model_cfg)
    tokenized = load_tokenized(spec.tokenized_dir)
    test_ids = tokenized["test"]["id"]
    data = with_labels(tokenized, spec)
    train = cap_train(data["train"], cfg["max_train_samples"], spec.seed)
    collator = DataCollatorWithPadding(tokenizer)

    def train_once(trial, checkpoints):
        model = build_model(trial)
        return (model, *fit(model, train, data["dev"], trial, collator, checkpoints=checkpoints))

    (model, trainer, resumed), train_seconds, lr_scores = select_learning_rate(spec, train_once)
    t0 = time.perf_counter()
    logits = predict_in_order(trainer, data["test"])
    eval_seconds = time.perf_counter() - t0
    info = cost_info(spec, model, trainer, train_seconds, eval_seconds, int(sum(train["length"])), len(train),
                     resumed)
    info.update(pooling=model.pooling if hasattr(model, "pooling") else model.base_model.model.pooling,
                learning_rate=trainer.args.learning_rate, dev_metric_by_learning_rate=lr_scores)
    finish(spec, model)
    return RunOutput(predictions_frame(spec, test_ids, logits), info)


# --- head-only on cached features ---------------------------------------------------------------------------


class FeatureHead(nn.Module):
    """The task head alone, fed cached pooled features (dropout + linear, as on top of the encoder)."""

    def __init__(self, dim: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_labels)

    def forward(self, features=None, labels=None):
        logits = self.classifier(self.dropout(features))
        if labels is None:
            return {"logits": logits}
        if self.num_labels == 1:
            loss = nn.functional.mse_loss(logits.squeeze(-1), labels.float())
        else:
            loss = nn.functional.cross_entropy(logits, labels.long())
        return {"loss": loss, "logits": logits}


def feature_splits(spec: RunSpec) -> dict:
    """({split: Dataset(features, labels)}, {split: ids}, cache) from the encode_features cache."""
    from datasets import Dataset

    cache = load_features(spec.features_path)
    table = spec.table().select("id", "split", spec.target_column)
    row = {i: n for n, i in enumerate(cache["ids"].tolist())}
    out, ids = {}, {}
    for split in ("train", "dev", "test"):
        part = table.filter(pl.col("split") == split)
        idx = [row[i] for i in part["id"].to_list()]
        if spec.task == "classification":
            index = {name: i for i, name in enumerate(spec.labels)}
            labels = [index[x] for x in part["label"].to_list()]
        else:
            labels = part["target"].to_list()
        out[split] = Dataset.from_dict({"features": cache["features"][idx], "labels": labels})
        ids[split] = part["id"].to_list()
    return out, ids, cache


def run_head(spec: RunSpec) -> RunOutput:
    from transformers import default_data_collator

    cfg = spec.method_cfg
    data, ids, cache = feature_splits(spec)
    train = cap_train(data["train"], cfg["max_train_samples"], spec.seed)
    num_labels = len(spec.labels) if spec.task == "classification" else 1

    def train_once(trial, checkpoints):
        torch.manual_seed(trial.seed)
        model = FeatureHead(cache["features"].shape[1], num_labels)
        return (model, *fit(model, train, data["dev"], trial, default_data_collator, group_by_length=False,
                            checkpoints=checkpoints, bf16=False))

    (model, trainer, resumed), train_seconds, lr_scores = select_learning_rate(spec, train_once)
    t0 = time.perf_counter()
    logits = predict_in_order(trainer, data["test"])
    eval_seconds = time.perf_counter() - t0
    info = cost_info(spec, model, trainer, train_seconds, eval_seconds, 0, len(train), resumed)
    # The frozen encoder counts towards the total: the fraction that trains is the head's share of the model.
    total = info["trainable_params"] + int(cache["encoder_params"])
    info.update(total_params=total, trainable_fraction=info["trainable_params"] / total, tokens_per_s=None,
                feature_cache_s=float(cache["seconds"]), pooling=str(cache["pooling"]), precision="fp32",
                learning_rate=trainer.args.learning_rate, dev_metric_by_learning_rate=lr_scores)
    finish(spec, model)
    return RunOutput(predictions_frame(spec, ids["test"], logits), info)
