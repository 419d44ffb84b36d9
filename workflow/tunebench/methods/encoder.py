"""Encoder fine-tuning: head-only, top-k, full, LoRA and QLoRA through one code path (the HF Trainer).

- head: the frozen encoder's pooled features are cached once (rule `encode_features`); only the head trains,
  on the cache, fitted to convergence by scikit-learn (logistic regression / ridge, L2 chosen on dev).
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

from tunebench import families
from tunebench.evaluation import metrics
from tunebench.modeling import adapters, linear_heads, training
from tunebench.modeling.features import load_features
from tunebench.modeling.loading import EncoderClassifier, load_encoder, load_tokenizer
from tunebench.modeling.tokenize import load_tokenized
from tunebench.spec import RunOutput, RunSpec

adapters.quiet_bitsandbytes()   # before peft imports bitsandbytes


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


# A trained strategy's registry entry names one of these (Strategy.trainable): given the model and the method's
# config, set requires_grad (or add adapters) and return the model to train.

def train_all(model: EncoderClassifier, cfg: dict) -> nn.Module:
    """full: every parameter trains."""
    model.requires_grad_(True)
    return model


def train_top_layers(model: EncoderClassifier, cfg: dict) -> nn.Module:
    """top_k: the top `k` transformer layers, what sits between them and the head, and the head."""
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


def add_adapters(model: EncoderClassifier, cfg: dict) -> nn.Module:
    """lora / qlora: peft LoRA adapters on the (frozen) encoder, the head and what precedes it trained in full."""
    from peft import get_peft_model

    lora = adapters.lora_config(cfg, model.encoder.config.model_type,
                                modules_to_save=["classifier", *between_encoder_and_head(model)])
    return get_peft_model(model, lora)


def apply_strategy(model: EncoderClassifier, strategy: str, cfg: dict) -> nn.Module:
    """Set requires_grad (or add adapters) as the strategy's registry entry says; return the model to train."""
    entry = families.strategy(strategy)
    if not entry.trainable:
        raise ValueError(f"encoder strategy '{strategy}' names no trainable function in tunebench.families")
    return families.load_function(entry.trainable)(model, cfg)


def build_model(spec: RunSpec) -> nn.Module:
    cfg = spec.method_cfg
    pooling = cfg.get("pooling") or spec.model_cfg["pooling"]
    num_labels = len(spec.labels) if spec.task == "classification" else 1
    if quantised(spec):
        from peft import prepare_model_for_kbit_training

        skip = ["pooler", "classifier"] if pooling == "cls" else ["classifier"]
        encoder = load_encoder(spec.model_cfg, training.quantization_config(cfg, skip), training=True)
        encoder = prepare_model_for_kbit_training(encoder, use_gradient_checkpointing=False)
        training.one_4bit_kernel(encoder)
        training.cache_dequantized_base(encoder, cfg["base_cache"])
    else:
        encoder = load_encoder(spec.model_cfg, training=True)
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


def cap_dev(dev, n: int | None):
    """One fixed sample of dev (the same rows for every seed and learning rate), in dev's order."""
    if not n or n >= len(dev):
        return dev
    return dev.select(sorted(np.random.default_rng(0).choice(len(dev), n, replace=False).tolist()))


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


class TrainingData:
    """A run's tokenised splits with labels, its (capped) training rows and the padding collator."""

    def __init__(self, spec: RunSpec):
        from transformers import DataCollatorWithPadding

        tokenized = load_tokenized(spec.tokenized_dir)
        self.test_ids = tokenized["test"]["id"]
        self.splits = with_labels(tokenized, spec)
        self.train = cap_train(self.splits["train"], spec.method_cfg["max_train_samples"], spec.seed)
        self.dev, self.test = cap_dev(self.splits["dev"], spec.method_cfg.get("max_dev_samples")), self.splits["test"]
        self.collator = DataCollatorWithPadding(load_tokenizer(spec.model_cfg))

    def fit(self, spec: RunSpec):
        """(model, trainer, train seconds, resumed checkpoint) of one training at spec's settings."""
        model = build_model(spec)
        return (model, *training.fit(model, self.train, self.dev, spec, self.collator, compute_metrics_fn(spec)))

    def trial(self, spec: RunSpec) -> float:
        """The dev metric of a learning-rate trial (training.trial_spec): of the best checkpoint, restored."""
        model, trainer, seconds, _ = self.fit(spec)
        training.keep_trained(spec, model, trainer, seconds)
        metric = training.dev_metric(spec.task)[0]
        return trainer.evaluate()[f"eval_{metric}"]


def select(spec: RunSpec) -> dict:
    """Rule tune_encoder: the learning rate of `learning_rate_grid` best on dev (training.select_learning_rate)."""
    _setup(spec)
    data = TrainingData(spec)
    trial = training.per_seed(spec, lambda seed_spec: data if seed_spec.seed == spec.seed else TrainingData(seed_spec))
    return training.select_learning_rate(spec, len(data.train), trial)


def _setup(spec: RunSpec) -> None:
    from transformers import set_seed

    torch.set_num_threads(spec.threads)
    set_seed(spec.seed)


def quantised(spec: RunSpec) -> bool:
    return families.strategy(spec.strategy).quantised


def run(spec: RunSpec) -> RunOutput:
    """A trained encoder strategy's run at spec.settings (a learning rate chosen on dev arrives there, from the
    runner; `head` has its own run: run_head)."""
    _setup(spec)
    data = TrainingData(spec)
    model, trainer, train_seconds, resumed = data.fit(spec)
    t0 = time.perf_counter()
    logits = training.predict_in_order(trainer, data.test)
    eval_seconds = time.perf_counter() - t0
    info = training.cost_info(spec, model, trainer, train_seconds, eval_seconds, int(sum(data.train["length"])),
                              len(data.train), resumed)
    info.update(pooling=model.pooling if hasattr(model, "pooling") else model.base_model.model.pooling,
                learning_rate=spec.settings["learning_rate"], selection=spec.selection_trace)
    finish(spec, model)
    if quantised(spec):
        info.update(linear4bit_modules=training.count_4bit_modules(model), qlora_path=training.qlora_path(model))
    return RunOutput(predictions_frame(spec, data.test_ids, logits), info)


# --- head-only on cached features ---------------------------------------------------------------------------


def feature_splits(spec: RunSpec) -> tuple[dict, dict, dict]:
    """({split: (features, targets)}, {split: ids}, cache) from the encode_features cache. Targets are class
    indices in `spec.labels` order, or the regression target."""
    cache = load_features(spec.features_path)
    table = spec.table().select("id", "split", spec.target_column)
    row = {i: n for n, i in enumerate(cache["ids"].tolist())}
    index = {name: i for i, name in enumerate(spec.labels or [])}
    out, ids = {}, {}
    for split in ("train", "dev", "test"):
        part = spec.test_rows() if split == "test" else table.filter(pl.col("split") == split)
        x = cache["features"][[row[i] for i in part["id"].to_list()]]
        if spec.task == "classification":
            y = np.array([index[label] for label in part["label"]])
        else:
            y = part["target"].to_numpy().astype(float)
        out[split], ids[split] = (x, y), part["id"]
    return out, ids, cache


def run_head(spec: RunSpec) -> RunOutput:
    """Strategy `head` (its registry entry's run): the head alone on the frozen encoder's cached features, fitted to convergence: logistic regression
    (L-BFGS) or ridge on standardised features, the L2 penalty chosen on dev from `C_grid` / `alpha_grid`. A
    Trainer-fitted head for a fixed few epochs can stop far from its optimum (a frozen encoder then looks
    useless — the strawman Wang 2024 warns about); a convex fit cannot."""
    _setup(spec)
    cfg = spec.method_cfg
    data, ids, cache = feature_splits(spec)
    (x_train, y_train), (x_dev, y_dev), (x_test, _) = data["train"], data["dev"], data["test"]
    if cfg["max_train_samples"] and cfg["max_train_samples"] < len(y_train):
        keep = np.sort(np.random.default_rng(spec.seed).choice(len(y_train), cfg["max_train_samples"], replace=False))
        x_train, y_train = x_train[keep], y_train[keep]
    t0 = time.perf_counter()
    model, selected, dev_score, grid_search = linear_heads.tune_on_dev(linear_heads.linear_knob(spec, scale=True),
                                                                       x_train, y_train, x_dev, y_dev, spec)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictions = linear_heads.predict(spec, model, x_test, ids["test"])
    eval_seconds = time.perf_counter() - t0
    trainable = int(model[-1].coef_.size + np.size(model[-1].intercept_))
    total = trainable + int(cache["encoder_params"])   # the frozen encoder counts towards the total
    info = {"trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
            "train_time_s": train_seconds, "eval_time_s": eval_seconds, "train_rows": len(y_train),
            "feature_cache_s": float(cache["seconds"]), "pooling": str(cache["pooling"]), "device": "cpu",
            "precision": "fp64", "selected": selected, "grid_search": grid_search, "best_dev_metric": dev_score,
            "dev_metric": "macro_f1" if spec.task == "classification" else "r2",
            "fit": "logistic regression (L-BFGS)" if spec.task == "classification" else "ridge (closed form)",
            "iterations": None if getattr(model[-1], "n_iter_", None) is None else int(np.max(model[-1].n_iter_))}
    return RunOutput(predictions, info)
