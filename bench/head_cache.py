"""Figure (c): the head method on the feature cache against training a head through the frozen encoder.

Cached side, as a study runs `head`: rule `encode_features` (tunebench.modeling.features.encode_features: every
split of the slice, eval mode, length-sorted batches) once, then `encoder.run_head` (a logistic regression fitted
to convergence on the cached vectors, its L2 penalty chosen on dev from the default `C_grid`). Frozen side, the
way a head is usually trained (and tunebench trained it before the convex fit): the same EncoderClassifier with
its encoder frozen, trained by `training.fit` (dynamic padding, length grouping, bf16 where supported) for
FROZEN_RECIPE's epochs, evaluating on dev and checkpointing every epoch, early stopping off. The two are not the
same estimator, so the dev macro-F1 of both is reported beside the speedup. The speedup counts the one-time
feature extraction on the cached side; the ratio without it is reported too.
"""

from __future__ import annotations

import torch

from .workloads import Context, split_rows, timed

QUICK_EPOCHS = 3
# The Trainer head recipe tunebench used before the convex fit (30 epochs, batch 64, lr 1e-3).
FROZEN_RECIPE = {"epochs": 30, "batch_size": 64, "learning_rate": 1e-3, "early_stopping_patience": None}


def cached(ctx: Context) -> dict:
    from tunebench.methods.encoder import run_head
    from tunebench.modeling.features import encode_features

    features = ctx.tmp / "features" / "fpb-slice-mean.npz"
    _, encode_s = timed(encode_features, ctx.fpb_shards(), ctx.encoder_cfg(), "mean", features, ctx.threads)
    spec = ctx.encoder_spec("head", "head-cached")
    spec.features_path = str(features)
    out, run_s = timed(run_head, spec)
    return {"feature_extraction_s": encode_s, "head_train_s": out.info["train_time_s"], "run_head_s": run_s,
            "fit": out.info["fit"], "selected": out.info["selected"], "iterations": out.info["iterations"],
            "best_dev_macro_f1": out.info["best_dev_metric"]}


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
    recipe = {**FROZEN_RECIPE, "epochs": QUICK_EPOCHS} if ctx.quick else FROZEN_RECIPE
    cache = cached(ctx)
    through = frozen(ctx, recipe)
    cached_total = cache["feature_extraction_s"] + cache["head_train_s"]
    rows = split_rows(ctx.fpb_slice())
    return {
        "workload": (f"head method of the default config ({cache['fit']}, penalty chosen on dev: {cache['selected']}) "
                     f"on cached mean-pooled features vs a Trainer head through the frozen encoder "
                     f"({recipe['epochs']} epochs, batch {recipe['batch_size']}, lr {recipe['learning_rate']}, "
                     f"early stopping off) on the FPB slice ({rows['train']} train / {rows['dev']} dev / "
                     f"{rows['test']} test), {ctx.encoder_name()}, {ctx.threads} threads"),
        "values": {
            "head_cache_speedup": through["head_train_s"] / cached_total,
            "head_cache_speedup_without_extraction": through["head_train_s"] / cache["head_train_s"],
            "head_cache_dev_macro_f1_delta_pts": 100 * (cache["best_dev_macro_f1"] - through["best_dev_macro_f1"]),
        },
        "raw": {"cached": {**cache, "total_s": cached_total}, "frozen_encoder": through, "rows": rows},
    }
