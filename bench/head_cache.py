"""Figure (c): head-only training from the feature cache against training the head through the frozen encoder.

Cached side: rule `encode_features` (tunebench.features.encode_features: every split of the slice, eval mode,
length-sorted batches) once, then `encoder.run_head` (the Trainer on the cached vectors). Frozen side: the same
EncoderClassifier with its encoder frozen, trained by `encoder.fit` (dynamic padding, length grouping, bf16 where
supported). Both use the default config's `head` method (its epochs, batch size and learning rate) with early
stopping off, so both run every epoch with the same schedule: train, evaluate on dev, checkpoint, restore the best.
The speedup counts the one-time feature extraction on the cached side; the ratio without it is reported too.
"""

from __future__ import annotations

import torch

from .workloads import Context, split_rows, timed

QUICK_EPOCHS = 3


def cached(ctx: Context, overrides: dict) -> dict:
    from tunebench.methods.encoder import run_head
    from tunebench.modeling.features import encode_features

    features = ctx.tmp / "features" / "fpb-slice-mean.npz"
    _, encode_s = timed(encode_features, ctx.fpb_shards(), ctx.encoder_cfg(), "mean", features, ctx.threads)
    spec = ctx.encoder_spec("head", "head-cached", **overrides)
    spec.features_path = str(features)
    out, run_s = timed(run_head, spec)
    return {"feature_extraction_s": encode_s, "head_train_s": out.info["train_time_s"], "run_head_s": run_s,
            "epochs_run": out.info["epochs_run"], "best_dev_macro_f1": out.info["best_dev_metric"]}


def frozen(ctx: Context, overrides: dict) -> dict:
    from transformers import DataCollatorWithPadding, set_seed

    from tunebench.methods.encoder import compute_metrics_fn, with_labels
    from tunebench.modeling.training import fit
    from tunebench.modeling.loading import EncoderClassifier, load_encoder, load_tokenizer
    from tunebench.modeling.tokenize import load_tokenized

    spec = ctx.encoder_spec("head", "head-frozen", **overrides)
    set_seed(spec.seed)
    tokenizer = load_tokenizer(spec.model_cfg)
    data = with_labels(load_tokenized(spec.tokenized_dir), spec)
    encoder = load_encoder(spec.model_cfg)
    torch.manual_seed(spec.seed)
    model = EncoderClassifier(encoder, spec.model_cfg["pooling"], len(spec.labels))
    model.encoder.requires_grad_(False)
    trainer, seconds, _ = fit(model, data["train"], data["dev"], spec, DataCollatorWithPadding(tokenizer),
                              compute_metrics_fn(spec), disable_tqdm=True)
    return {"head_train_s": seconds, "epochs_run": float(trainer.state.epoch),
            "precision": "bf16" if trainer.args.bf16 else "fp32", "best_dev_macro_f1": trainer.state.best_metric}


def measure(ctx: Context) -> dict:
    torch.set_num_threads(ctx.threads)
    overrides = {"early_stopping_patience": None}
    if ctx.quick:
        overrides["epochs"] = QUICK_EPOCHS
    cache = cached(ctx, overrides)
    through = frozen(ctx, overrides)
    cached_total = cache["feature_extraction_s"] + cache["head_train_s"]
    head_cfg = {**ctx.cfg["methods"]["head"], **overrides}
    rows = split_rows(ctx.fpb_slice())
    return {
        "workload": (f"head method of the default config ({head_cfg['epochs']} epochs, batch "
                     f"{head_cfg['batch_size']}, lr {head_cfg['learning_rate']}, early stopping off) on the FPB "
                     f"slice ({rows['train']} train / {rows['dev']} dev / {rows['test']} test), "
                     f"{ctx.encoder_name()}, {ctx.threads} threads"),
        "values": {
            "head_cache_speedup": through["head_train_s"] / cached_total,
            "head_cache_speedup_without_extraction": through["head_train_s"] / cache["head_train_s"],
        },
        "raw": {"cached": {**cache, "total_s": cached_total}, "frozen_encoder": through, "rows": rows},
    }
