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

import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from tunebench.evaluation import metrics
from tunebench.modeling import training
from tunebench.modeling.features import load_features
from tunebench.modeling.loading import EncoderClassifier, load_encoder, load_tokenizer
from tunebench.modeling.tokenize import load_tokenized
from tunebench.runner import RunOutput, RunSpec

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


def build_model(spec: RunSpec) -> nn.Module:
    cfg = spec.method_cfg
    pooling = cfg.get("pooling") or spec.model_cfg["pooling"]
    num_labels = len(spec.labels) if spec.task == "classification" else 1
    if spec.strategy == "qlora":
        from peft import prepare_model_for_kbit_training

        skip = ["pooler", "classifier"] if pooling == "cls" else ["classifier"]
        encoder = load_encoder(spec.model_cfg, training.quantization_config(cfg, skip))
        encoder = prepare_model_for_kbit_training(encoder, use_gradient_checkpointing=False)
        training.one_4bit_kernel(encoder)
        training.cache_dequantized_base(encoder, cfg["base_cache"])
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


def compute_metrics_fn(spec: RunSpec):
    def compute(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if spec.task == "classification":
            gold = [spec.labels[i] for i in labels]
            pred = [spec.labels[i] for i in np.asarray(logits).argmax(-1)]
            return metrics.classification_scalars(gold, pred, spec.labels)
        return metrics.regression_scalars(labels, np.asarray(logits).reshape(-1))

    return compute


def predictions_frame(spec: RunSpec, ids, logits: np.ndarray) -> pl.DataFrame:
    logits = np.asarray(logits, dtype=np.float64)
    if spec.task == "regression":
        return pl.DataFrame({"id": list(ids), "prediction": logits.reshape(-1)})
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    frame = {"id": list(ids), "prediction": [spec.labels[i] for i in probs.argmax(-1)]}
    frame.update({f"score_{lab}": probs[:, i] for i, lab in enumerate(spec.labels)})
    return pl.DataFrame(frame)


def finish(spec: RunSpec, model) -> None:
    """Keep the trained weights if asked; the checkpoints only served resuming."""
    if spec.method_cfg.get("save_weights"):
        training.save_trainable(model, spec.run_dir / "weights.safetensors")
    training.drop_checkpoints(spec)


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
        return (model, *training.fit(model, train, data["dev"], trial, collator, compute_metrics_fn(trial),
                                     checkpoints=checkpoints))

    (model, trainer, resumed), train_seconds, lr_scores = training.select_learning_rate(spec, train_once)
    t0 = time.perf_counter()
    logits = training.predict_in_order(trainer, data["test"])
    eval_seconds = time.perf_counter() - t0
    info = training.cost_info(spec, model, trainer, train_seconds, eval_seconds, int(sum(train["length"])),
                              len(train), resumed)
    info.update(pooling=model.pooling if hasattr(model, "pooling") else model.base_model.model.pooling,
                learning_rate=trainer.args.learning_rate, dev_metric_by_learning_rate=lr_scores)
    finish(spec, model)
    if spec.strategy == "qlora":
        info.update(linear4bit_modules=training.count_4bit_modules(model), qlora_path=training.qlora_path(model))
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
        return (model, *training.fit(model, train, data["dev"], trial, default_data_collator,
                                     compute_metrics_fn(trial), group_by_length=False, checkpoints=checkpoints,
                                     bf16=False))

    (model, trainer, resumed), train_seconds, lr_scores = training.select_learning_rate(spec, train_once)
    t0 = time.perf_counter()
    logits = training.predict_in_order(trainer, data["test"])
    eval_seconds = time.perf_counter() - t0
    info = training.cost_info(spec, model, trainer, train_seconds, eval_seconds, 0, len(train), resumed)
    # The frozen encoder counts towards the total: the fraction that trains is the head's share of the model.
    total = info["trainable_params"] + int(cache["encoder_params"])
    info.update(total_params=total, trainable_fraction=info["trainable_params"] / total, tokens_per_s=None,
                feature_cache_s=float(cache["seconds"]), pooling=str(cache["pooling"]), precision="fp32",
                learning_rate=trainer.args.learning_rate, dev_metric_by_learning_rate=lr_scores)
    finish(spec, model)
    return RunOutput(predictions_frame(spec, ids["test"], logits), info)
