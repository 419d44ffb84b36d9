"""Figure (h): QLoRA's training step against LoRA's, on this CPU's own path and on an emulated AVX2-only CPU.

Both train the default study's adapters (all-MiniLM-L6-v2, r 8, the config's batch) for one epoch over the FPB
slice, alternated (lora, qlora, qlora, lora, ...) after an untimed warm-up of each, median of the repetitions.
The 4-bit base is what QLoRA defines (NF4 weights stored 4-bit, adapters trained on their dequantisation); the
path that ran is recorded (`base_cache`: dequantised once and kept, or bitsandbytes' matmul_4bit every step).

"native" runs here as the machine is (`precision: auto`, `base_cache: auto`). "avx2" runs in a child process
with tunebench.hardware.AVX2_ENVIRONMENT (torch, MKL and oneDNN held to AVX2) and `precision: fp32`: no bf16, no
AVX-512 matmuls, and tunebench sees no AVX-512, as on a laptop or a cloud VM without AVX-512. bitsandbytes' own
CPU kernels read none of those variables, so the "avx2 / matmul_4bit" side is its AVX-512 kernel in fp32 — faster than a real AVX2
machine's scalar code; the dequantise-once path does not use those kernels at all.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from .workloads import REPO, Context, timed

REPEATS = 2
SIDES = {   # name → (method, overrides)
    "lora": ("lora", {}),
    "qlora": ("qlora", {}),
    "qlora_matmul_4bit": ("qlora", {"base_cache": "off"}),
}


def train_once(ctx: Context, method: str, run_name: str, precision: str, data, tokenizer, **overrides) -> dict:
    from transformers import DataCollatorWithPadding, set_seed

    from tunebench.methods.encoder import build_model, compute_metrics_fn
    from tunebench.modeling import training

    spec = ctx.encoder_spec(method, run_name, epochs=1, early_stopping_patience=None, precision=precision,
                            **overrides)
    set_seed(spec.seed)
    model = build_model(spec)
    trainer, seconds, _ = training.fit(model, data["train"], data["dev"], spec, DataCollatorWithPadding(tokenizer),
                                       compute_metrics_fn(spec), eval_strategy="no", save_strategy="no",
                                       load_best_model_at_end=False, disable_tqdm=True)
    steps = trainer.state.global_step
    dev, _ = timed(trainer.evaluate, data["dev"])
    path = training.qlora_path(model) if method == "qlora" else "dense"
    return {"train_s": seconds, "steps": steps, "step_s": seconds / steps, "dev_accuracy": dev["eval_accuracy"],
            "path": path, "precision": "bf16" if trainer.args.bf16 else "fp32"}


def worker(precision: str, quick: bool, threads: int, tmp: str) -> dict:
    """One machine setting: every side, warmed up once, then alternated REPEATS times."""
    import torch

    from tunebench.methods.encoder import with_labels
    from tunebench.modeling.loading import load_tokenizer
    from tunebench.modeling.tokenize import load_tokenized

    from pathlib import Path

    torch.set_num_threads(threads)
    ctx = Context(quick=quick, threads=threads, tmp=Path(tmp))
    tokenizer = load_tokenizer(ctx.encoder_cfg())
    spec = ctx.encoder_spec("lora", "probe")
    data = with_labels(load_tokenized(ctx.fpb_shards()), spec)
    runs = {name: [] for name in SIDES}
    for name, (method, overrides) in SIDES.items():   # warm-up, untimed
        train_once(ctx, method, f"warm-{name}", precision, data, tokenizer, **overrides)
    for rep in range(REPEATS):
        order = list(SIDES) if rep % 2 == 0 else list(reversed(SIDES))
        for name in order:
            method, overrides = SIDES[name]
            runs[name].append(train_once(ctx, method, f"{name}-{rep}", precision, data, tokenizer, **overrides))
    return runs


def side(runs: list[dict]) -> dict:
    return {"step_s_median": statistics.median(r["step_s"] for r in runs),
            "dev_accuracy": runs[-1]["dev_accuracy"], "path": runs[-1]["path"], "precision": runs[-1]["precision"],
            "runs": runs}


def run_setting(ctx: Context, name: str, env: dict, precision: str) -> dict:
    out = ctx.tmp / f"qlora-{name}.json"
    code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from bench.qlora import worker; "
            f"json.dump(worker({precision!r}, {ctx.quick}, {ctx.threads}, {str(ctx.tmp / name)!r}), "
            f"open({str(out)!r}, 'w'))")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True, cwd=REPO)
    runs = json.loads(out.read_text())
    return {side_name: side(side_runs) for side_name, side_runs in runs.items()}


def measure(ctx: Context) -> dict:
    from tunebench import hardware

    settings = {"native": run_setting(ctx, "native", {}, "auto"),
                "avx2": run_setting(ctx, "avx2", hardware.AVX2_ENVIRONMENT, "fp32")}
    values = {}
    for name, sides in settings.items():
        lora = sides["lora"]["step_s_median"]
        values[f"qlora_step_ratio_{name}"] = sides["qlora"]["step_s_median"] / lora
        values[f"qlora_matmul_4bit_step_ratio_{name}"] = sides["qlora_matmul_4bit"]["step_s_median"] / lora
        values[f"qlora_dev_accuracy_delta_pts_{name}"] = 100 * (sides["qlora"]["dev_accuracy"]
                                                                 - sides["lora"]["dev_accuracy"])
    values["lora_step_ratio_avx2_vs_native"] = (settings["avx2"]["lora"]["step_s_median"]
                                                / settings["native"]["lora"]["step_s_median"])
    paths = {name: sides["qlora"]["path"] for name, sides in settings.items()}
    return {
        "workload": (f"{ctx.encoder_name()} LoRA vs QLoRA (NF4) adapters, FPB slice, 1 epoch, batch "
                     f"{ctx.cfg['methods']['lora']['batch_size']}; warm-up of each side, then alternated "
                     f"{REPEATS}×, median step time; native = this CPU with precision auto, avx2 = "
                     f"torch, MKL and oneDNN held to AVX2 and precision fp32; QLoRA path (base_cache auto): {paths}; "
                     f"{ctx.threads} threads"),
        "values": values,
        "raw": settings,
    }
