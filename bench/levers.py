"""Figure (j): what each candidate lever of #14 buys a full fine-tuning step, one at a time, against tunebench's
path with SDPA attention (figure (a)'s "ours": dynamic padding, length grouping, bf16 autocast where the CPU has
it; SDPA is transformers' default, and what `attention: auto` uses everywhere but in training on a CPU).

Every variant trains the same model from the same initial weights on the same FPB slice for one epoch, with
evaluation and checkpoints off; the order of the variants flips between repetitions after a warm-up of the
current path, and each variant's time is the median of its repetitions. Beside each ratio: the dev accuracy
difference, because only some levers are exact (an attention implementation, padding to a multiple) and others
change the estimator (dropout off). A lever is kept in the defaults only if it is exact or its dev change is
within noise over seeds — this figure measures; it does not decide.

Levers:
- `attention_dropout_off`: attention-probability dropout 0 (BERT's 0.1 otherwise). PyTorch's CPU flash attention
  takes no dropout, so with it on, SDPA falls back to its math path in training.
- `dropout_off`: every dropout 0 (hidden, attention, head): no bernoulli masks (an older profile: 17% of a step).
- `eager_attention`: transformers' eager attention instead of SDPA (what `attention: auto` trains with on a CPU).
- `pad_multiple_16`: batches padded to a multiple of 16 tokens (fewer distinct shapes for oneDNN's primitive
  cache; more padding).
- `torch_compile`: the Trainer's `torch_compile` (inductor, C++ kernels on CPU); its compile time is in the clock.

The same for a step of the default `llm_lora` method on SmolLM2-135M-Instruct (figure (i)'s setup, answer-only
loss, 8 optimizer steps a side, median step time): `gen_eager_attention` (SDPA's CPU flash-attention backward was
~20% of a step in a profile) and `gen_lora_dropout_off` (the adapters' dropout masks, 8–10% in a profile; changes
the estimator).

And the other side of `attention: auto`, prompting: `icl_eager_attention` answers figure (d)'s k = 10 prompts
(SmolLM2, label scoring and generation over the shared-prefix KV cache) with eager attention instead of SDPA
(median of the alternated repetitions, after a warm-up; the share of identical predictions beside).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tunebench.modeling.loading import use_attention
from tunebench.modeling.training import attention_implementation

from .workloads import Context, timed

EPOCHS = 1
REPEATS = 2
LEVERS = ("current", "attention_dropout_off", "dropout_off", "eager_attention", "pad_multiple_16", "torch_compile")
GENERATIVE_LEVERS = ("current", "eager_attention", "lora_dropout_off")
ICL_SHOTS = 10


def set_dropout(model: nn.Module, attention_only: bool) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and (not attention_only or name.endswith("attention.self.dropout")):
            module.p = 0.0


def train_variant(ctx: Context, lever: str, rep: int, data, tokenizer) -> dict:
    from transformers import DataCollatorWithPadding, set_seed

    from tunebench.methods.encoder import build_model, compute_metrics_fn
    from tunebench.modeling.training import fit

    spec = ctx.encoder_spec("full", f"lever-{lever}-{rep}", epochs=EPOCHS, early_stopping_patience=None)
    set_seed(spec.seed)
    model = build_model(spec)
    if lever in ("attention_dropout_off", "dropout_off"):
        set_dropout(model, attention_only=lever == "attention_dropout_off")
    use_attention(model.encoder, "eager" if lever == "eager_attention" else "sdpa")
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=16 if lever == "pad_multiple_16" else None)
    overrides = {"torch_compile": True} if lever == "torch_compile" else {}
    trainer, seconds, _ = fit(model, data["train"], data["dev"], spec, collator, compute_metrics_fn(spec),
                              eval_strategy="no", save_strategy="no", load_best_model_at_end=False,
                              disable_tqdm=True, **overrides)
    metrics, _ = timed(trainer.evaluate, data["dev"])
    return {"train_s": seconds, "dev_accuracy": metrics["eval_accuracy"], "dev_macro_f1": metrics["eval_macro_f1"],
            "attention": attention_implementation(model)}


def train_generative_variant(spec, setup, lever: str, name: str) -> dict:
    """Figure (i)'s answer-only `llm_lora` training with one lever changed."""
    import dataclasses

    from transformers import set_seed

    from tunebench.methods import generative
    from tunebench.modeling import training

    spec = dataclasses.replace(spec, run_dir=spec.run_dir / name)
    set_seed(spec.seed)
    model = generative.build_model(spec)
    use_attention(model, "eager" if lever == "eager_attention" else "sdpa")
    if lever == "lora_dropout_off":
        for module_name, module in model.named_modules():
            if isinstance(module, nn.Dropout) and ".lora_dropout." in module_name:
                module.p = 0.0
    trainer, seconds, _ = training.fit(model, setup.train, setup.dev, spec, generative.collator(setup.tokenizer, model),
                                       metric="loss", greater=False, trainer_class=generative.answer_loss_trainer(),
                                       disable_tqdm=True)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"step_s": seconds / trainer.state.global_step, "last_loss": losses[-1] if losses else None,
            "attention": attention_implementation(model)}


def measure_generative(ctx: Context) -> tuple[dict, dict]:
    from tunebench.methods import generative

    from .generative import lora_spec

    spec = lora_spec(ctx)
    setup = generative.Setup(spec)
    torch.set_num_threads(ctx.threads)   # Setup sets the spec's threads; the bench decides
    train_generative_variant(spec, setup, "current", "gen-warmup")
    runs = {lever: [] for lever in GENERATIVE_LEVERS}
    for rep in range(REPEATS):
        for lever in (GENERATIVE_LEVERS if rep % 2 == 0 else GENERATIVE_LEVERS[::-1]):
            runs[lever].append(train_generative_variant(spec, setup, lever, f"gen-{lever}-{rep}"))
    base_s = float(np.median([r["step_s"] for r in runs["current"]]))
    values = {}
    for lever in GENERATIVE_LEVERS[1:]:
        values[f"lever_gen_{lever}_speedup"] = base_s / float(np.median([r["step_s"] for r in runs[lever]]))
        values[f"lever_gen_{lever}_last_loss_delta"] = (runs[lever][0]["last_loss"] - runs["current"][0]["last_loss"]
                                                        if runs[lever][0]["last_loss"] is not None else None)
    return values, {"runs": runs, "steps": spec.method_cfg["max_steps"]}


def measure_icl_attention(ctx: Context) -> tuple[dict, dict]:
    """Figure (d)'s k = 10 prompts answered (scores and generated answers, as the default icl methods do) with
    SDPA and with eager attention."""
    from tunebench.methods import icl
    from tunebench.modeling import prompts

    from .icl import icl_spec, prompts_for

    spec = icl_spec(ctx, ICL_SHOTS)
    cfg = spec.method_cfg
    words = prompts.verbalizers(spec.labels, cfg["verbalizers"])
    backend = icl.LocalModel(spec)
    prompter = backend.prompter(spec, words)
    texts, _, _ = prompts_for(ctx, spec, prompter, words)

    def answer(implementation: str):
        use_attention(backend.model, implementation)
        result, seconds = timed(backend.answer, prompter, texts, True, True)
        return seconds, np.asarray(result.loglik_mean).argmax(1).tolist()

    answer("sdpa")                                     # warm-up, untimed
    runs = {"sdpa": [], "eager": []}
    for rep in range(REPEATS):
        for implementation in (("sdpa", "eager") if rep % 2 == 0 else ("eager", "sdpa")):
            runs[implementation].append(answer(implementation))
    sdpa_s = float(np.median([s for s, _ in runs["sdpa"]]))
    eager_s = float(np.median([s for s, _ in runs["eager"]]))
    same = float(np.mean([a == b for a, b in zip(runs["sdpa"][0][1], runs["eager"][0][1])]))
    return ({"lever_icl_eager_attention_speedup": sdpa_s / eager_s,
             "lever_icl_eager_attention_same_predictions": same},
            {"queries": len(texts), "k": ICL_SHOTS, "sdpa_s": [s for s, _ in runs["sdpa"]],
             "eager_s": [s for s, _ in runs["eager"]]})


def measure(ctx: Context) -> dict:
    from tunebench.methods.encoder import with_labels
    from tunebench.modeling.loading import load_tokenizer
    from tunebench.modeling.tokenize import load_tokenized

    torch.set_num_threads(ctx.threads)
    spec = ctx.encoder_spec("full", "lever-probe")
    tokenizer = load_tokenizer(spec.model_cfg)
    data = with_labels(load_tokenized(ctx.fpb_shards()), spec)
    rows = len(data["train"])
    levers = LEVERS if not ctx.quick else ("current", "dropout_off", "eager_attention")

    train_variant(ctx, "current", -1, data, tokenizer)   # warm-up: first-touch allocations, oneDNN primitives
    runs = {lever: [] for lever in levers}
    for rep in range(REPEATS):
        for lever in (levers if rep % 2 == 0 else levers[::-1]):
            try:
                runs[lever].append(train_variant(ctx, lever, rep, data, tokenizer))
            except Exception as error:   # a lever this machine cannot run (e.g. no C++ compiler for inductor)
                runs[lever].append({"error": f"{type(error).__name__}: {error}"[:300]})
    base = runs["current"]
    base_s = float(np.median([r["train_s"] for r in base]))
    base_accuracy = float(np.mean([r["dev_accuracy"] for r in base]))
    values, raw = {}, {"rows": rows, "epochs": EPOCHS, "runs": runs}
    for lever in levers[1:]:
        done = [r for r in runs[lever] if "train_s" in r]
        speedup = base_s / float(np.median([r["train_s"] for r in done])) if done else None
        values[f"lever_{lever}_speedup"] = speedup
        values[f"lever_{lever}_dev_accuracy_delta_pts"] = (
            100 * (float(np.mean([r["dev_accuracy"] for r in done])) - base_accuracy) if done else None)
    generative_values, raw["generative"] = measure_generative(ctx)
    values.update(generative_values)
    icl_values, raw["icl"] = measure_icl_attention(ctx)
    values.update(icl_values)
    llm = "a tiny Llama" if ctx.quick else "SmolLM2-135M-Instruct"
    return {
        "workload": (f"{ctx.encoder_name()} full fine-tuning, FPB slice of {rows} sentences, {EPOCHS} epoch, batch "
                     f"{spec.method_cfg['batch_size']}: each lever alone vs the current path (median of {REPEATS}, "
                     f"order flipped, after a warm-up); dev accuracy difference beside. {llm} llm_lora "
                     f"(answer-only loss, {raw['generative']['steps']} steps a side): median step time, last loss "
                     f"difference beside. {llm} prompting, {raw['icl']['queries']} FPB prompts at k = {ICL_SHOTS}: eager vs SDPA "
                     f"(median of {REPEATS}, alternated, after a warm-up); {ctx.threads} threads"),
        "values": values,
        "raw": raw,
    }
