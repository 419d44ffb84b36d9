"""Figures (a) and (b): full fine-tuning throughput against a naive Trainer run, and against the matmul peak.

(a) tunebench's path — `encoder.build_model` + `encoder.fit` (training_arguments: dynamic padding through
    DataCollatorWithPadding, length-grouped batches, bf16 autocast where the CPU has avx512_bf16, the config's
    attention kernels: `auto` trains with eager on a CPU) — against a naive HF Trainer run of the same model
    (EncoderClassifier, mean pooling, same initial weights, same optimiser settings) in fp32 with transformers'
    default SDPA attention, padded to max_length, in random order. Both train one epoch on the same FPB slice; they
    alternate (naive, ours, naive, ours) so drift in machine load hits both. Only training is timed (no
    evaluation or checkpoint during it); the dev split is scored afterwards to check quality holds.
(b) torch.matmul of square matrices in fp32 and bf16 with the same threads gives the machine's peak FLOP/s;
    the tunebench run's useful FLOP/s over that is its fraction of peak.
"""

from __future__ import annotations

import numpy as np
import torch

from tunebench.modeling.loading import use_attention
from tunebench.modeling.training import attention_implementation

from .workloads import Context, timed

EPOCHS = 1
REPEATS = 2            # alternations of (naive, ours)
MATMUL_SIZE = 2048
MATMUL_REPEATS = 10


# --- (b) the hardware's limit ---------------------------------------------------------------------------------


def matmul_peak(dtype: torch.dtype, n: int, repeats: int) -> dict:
    """Best and median FLOP/s of an n×n @ n×n matmul (2n³ FLOPs) over `repeats` timed calls after a warm-up."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        torch.matmul(a, b)
    seconds = [timed(torch.matmul, a, b)[1] for _ in range(repeats)]
    flops = 2 * n ** 3
    return {"size": n, "repeats": repeats, "best_flops": flops / min(seconds),
            "median_flops": flops / float(np.median(seconds))}


def non_embedding_parameters(model) -> int:
    """Parameters that do work per token: the transformer layers and the head (not the embedding tables, and not
    BertPooler, whose output mean pooling never uses)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if "embeddings" not in name and ".pooler." not in name)


def training_flops(lengths: np.ndarray, params: int, layers: int, hidden: int, epochs: int) -> float:
    """Training FLOPs on useful (non-pad) tokens: per token 6 × non-embedding parameters (forward + backward)
    plus attention 12 × layers × hidden × the sentence's own length (Kaplan et al. 2020, × 3 for backward)."""
    lengths = lengths.astype(np.float64)
    return epochs * float(np.sum(lengths * 6 * params + 12 * layers * hidden * lengths ** 2))


# --- (a) the two training runs ----------------------------------------------------------------------------------


def dev_scores(trainer, dev) -> dict:
    metrics, seconds = timed(trainer.evaluate, dev)
    return {"dev_accuracy": metrics["eval_accuracy"], "dev_macro_f1": metrics["eval_macro_f1"],
            "eval_s": seconds}


def train_ours(ctx: Context, rep: int, data, tokenizer) -> dict:
    """tunebench's training path, as `encoder.run` calls it; only the per-epoch evaluation and checkpoint are
    switched off, so the clock sees training alone."""
    from transformers import DataCollatorWithPadding, set_seed

    from tunebench.methods.encoder import build_model, compute_metrics_fn
    from tunebench.modeling.training import fit

    spec = ctx.encoder_spec("full", f"ft-ours-{rep}", epochs=EPOCHS, early_stopping_patience=None)
    set_seed(spec.seed)
    model = build_model(spec)
    trainer, seconds, _ = fit(model, data["train"], data["dev"], spec, DataCollatorWithPadding(tokenizer),
                              compute_metrics_fn(spec), eval_strategy="no", save_strategy="no", load_best_model_at_end=False,
                              disable_tqdm=True)
    precision = "bf16" if trainer.args.bf16 else "fp32"
    return {"train_s": seconds, "precision": precision, "attention": attention_implementation(model),
            **dev_scores(trainer, data["dev"])}


def train_naive(ctx: Context, rep: int, data, tokenizer) -> dict:
    """A plain Trainer run of the same model and optimiser settings: fp32, every batch padded to max_length,
    random order (the Trainer's defaults)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from tunebench.methods.encoder import build_model, compute_metrics_fn

    spec = ctx.encoder_spec("full", f"ft-naive-{rep}", epochs=EPOCHS, early_stopping_patience=None)
    cfg = spec.method_cfg
    set_seed(spec.seed)
    model = build_model(spec)
    use_attention(model.encoder, "sdpa")   # transformers' default: a plain run does not pick kernels
    args = TrainingArguments(
        output_dir=str(spec.run_dir / "trainer"), per_device_train_batch_size=cfg["batch_size"],
        per_device_eval_batch_size=cfg["eval_batch_size"], learning_rate=cfg["learning_rate"],
        num_train_epochs=cfg["epochs"], warmup_steps=cfg["warmup_ratio"], weight_decay=cfg["weight_decay"],
        lr_scheduler_type="linear", eval_strategy="no", save_strategy="no", seed=spec.seed, data_seed=spec.seed,
        use_cpu=True, report_to="none", dataloader_num_workers=0, disable_tqdm=True)
    collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=spec.model_cfg["max_length"])
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["dev"],
                      data_collator=collator, compute_metrics=compute_metrics_fn(spec))
    _, seconds = timed(trainer.train)
    return {"train_s": seconds, "precision": "fp32", "attention": attention_implementation(model),
            **dev_scores(trainer, data["dev"])}


def side_totals(runs: list[dict], rows: int, useful_tokens: int, processed_tokens: int | None) -> dict:
    seconds = sum(r["train_s"] for r in runs)
    out = {"runs": runs, "train_s_total": seconds,
           "samples_per_s": rows * EPOCHS * len(runs) / seconds,
           "useful_tokens_per_s": useful_tokens * EPOCHS * len(runs) / seconds,
           "dev_accuracy": float(np.mean([r["dev_accuracy"] for r in runs])),
           "dev_macro_f1": float(np.mean([r["dev_macro_f1"] for r in runs]))}
    if processed_tokens is not None:
        out["processed_tokens_per_s"] = processed_tokens * EPOCHS * len(runs) / seconds
    return out


def measure(ctx: Context) -> dict:
    from tunebench.methods.encoder import build_model, with_labels
    from tunebench.modeling.loading import load_tokenizer
    from tunebench.modeling.tokenize import load_tokenized

    torch.set_num_threads(ctx.threads)
    size = 512 if ctx.quick else MATMUL_SIZE
    peak = {name: matmul_peak(dtype, size, 3 if ctx.quick else MATMUL_REPEATS)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    spec = ctx.encoder_spec("full", "ft-probe")
    tokenizer = load_tokenizer(spec.model_cfg)
    data = with_labels(load_tokenized(ctx.fpb_shards()), spec)
    lengths = np.asarray(data["train"]["length"])
    rows, useful = len(lengths), int(lengths.sum())
    max_length = spec.model_cfg["max_length"]

    naive, ours = [], []
    for rep in range(REPEATS):
        naive.append(train_naive(ctx, rep, data, tokenizer))
        ours.append(train_ours(ctx, rep, data, tokenizer))
    naive_side = side_totals(naive, rows, useful, rows * max_length)
    ours_side = side_totals(ours, rows, useful, None)

    model = build_model(spec)
    params = non_embedding_parameters(model)
    flops = training_flops(lengths, params, model.config.num_hidden_layers, model.config.hidden_size, EPOCHS)
    achieved = flops * len(ours) / ours_side["train_s_total"]
    naive_achieved = flops * len(naive) / naive_side["train_s_total"]

    speedup = ours_side["useful_tokens_per_s"] / naive_side["useful_tokens_per_s"]
    accuracy_delta = 100 * (ours_side["dev_accuracy"] - naive_side["dev_accuracy"])
    return {
        "workload": (f"{ctx.encoder_name()}, FPB 50Agree train slice of {rows} "
                     f"sentences ({useful} useful tokens, max_length {max_length}), {EPOCHS} epoch, batch "
                     f"{spec.method_cfg['batch_size']}, lr {spec.method_cfg['learning_rate']}; naive and tunebench "
                     f"alternated {REPEATS}× each; dev split {len(data['dev'])} sentences; {ctx.threads} threads"),
        "values": {
            "full_ft_speedup_vs_naive": speedup,
            "full_ft_samples_per_s_ratio": ours_side["samples_per_s"] / naive_side["samples_per_s"],
            "full_ft_dev_accuracy_delta_pts": accuracy_delta,
            "full_ft_fraction_of_peak": achieved / peak["bf16"]["best_flops"],
            "full_ft_fraction_of_fp32_peak": achieved / peak["fp32"]["best_flops"],
        },
        "raw": {
            "naive": naive_side, "tunebench": ours_side,
            "train_rows": rows, "useful_tokens_per_epoch": useful, "epochs": EPOCHS,
            "matmul_peak": peak,
            "flops_formula": ("per useful token: 6 × non-embedding parameters + 12 × layers × hidden × the "
                              "sentence's length (attention); non-embedding = transformer layers + head, "
                              "pooler excluded (unused with mean pooling)"),
            "non_embedding_params": params, "layers": model.config.num_hidden_layers,
            "hidden": model.config.hidden_size, "training_flops_per_run": flops,
            "tunebench_achieved_flops": achieved, "naive_achieved_useful_flops": naive_achieved,
        },
    }
