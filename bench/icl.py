"""Figure (d): ICL label scoring against naive per-example generation, at k = 0 and k = 10.

The prompts are built as `tunebench.icl.run` builds them (default template, class-balanced demonstrations from
the FPB training split, fitted to the model's max_length), for the first test rows of FPB 50Agree. Then the same
prompts go through
  ours:  `icl.LocalModel.label_probabilities` → `lm.score_labels`: batches of similar length; the prompt is encoded
         once and every label word is decoded against it;
  naive: `lm.naive_generate`: greedy generation one prompt at a time (max_new_tokens of the icl method).
The model is the tiny T5 of tests/tiny_models.py (d_model 64, 2+2 layers) with its tokenizer trained on the
prompt words and the FPB training texts: its answers mean nothing, and with so small a model per-call overhead
weighs more than it would with Flan-T5 — the figure measures the decoding strategies, not a model.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from .workloads import Context, timed

SHOTS = (0, 10)
QUERIES = 128
QUERIES_QUICK = 12
MAX_LENGTH = 2048      # the tiny tokenizer splits words finely: room for 10 demonstrations
REPEATS = 2            # alternations of (naive, ours)


def tiny_t5(ctx: Context):
    def build():
        import polars as pl
        from tiny_models import PROMPT_CORPUS, build_tiny_t5

        table = pl.read_parquet(ctx.table("fpb"))
        texts = table.filter(pl.col("split") == "train")["text"].to_list()
        return build_tiny_t5(ctx.tmp / "tiny_t5", corpus=PROMPT_CORPUS + texts)
    return ctx.once("tiny_t5", build)


def icl_spec(ctx: Context, k: int):
    """A RunSpec for an `icl` method on FPB, pushed through the schema so every default is filled."""
    from tunebench import config as tbconfig
    from tunebench.runner import RunSpec

    raw = copy.deepcopy(ctx.cfg)
    raw["models"]["tiny_t5"] = {"kind": "seq2seq", "path": str(tiny_t5(ctx)), "max_length": MAX_LENGTH}
    raw["methods"]["icl_bench"] = {"strategy": "icl", "k": k, "decoding": "score",
                                   "max_test_samples": QUERIES_QUICK if ctx.quick else QUERIES}
    raw["study"] = [{"datasets": ["fpb"], "models": ["tiny_t5"], "methods": ["icl_bench"]}]
    cfg = tbconfig.validate(raw)
    return RunSpec(dataset="fpb", model="tiny_t5", method=f"icl_k{k}", seed=0, dataset_cfg=cfg["datasets"]["fpb"],
                   model_cfg=cfg["models"]["tiny_t5"], method_cfg=cfg["methods"]["icl_bench"],
                   table_path=str(ctx.table("fpb")), run_dir=ctx.tmp / "runs" / f"icl-k{k}", threads=ctx.threads)


def prompts_for(spec, backend, words) -> tuple[list[str], list[str], dict]:
    """(prompt texts, gold labels, prompt facts) exactly as icl.run fits them."""
    from tunebench.methods import icl
    from tunebench.modeling import prompts

    cfg = spec.method_cfg
    train, test = spec.split("train"), icl.evaluation_rows(spec)
    template = prompts.Template.parse(cfg["template"], spec.task, list(words.values()))
    pool = list(zip(train["text"], (words[label] for label in train["label"])))
    chosen = icl.select_demonstrations(spec, train, test)
    fitted = [prompts.fit_prompt(template, text, [pool[j] for j in idx], backend.count_tokens, backend.limit)
              for text, idx in zip(test["text"], chosen)]
    return [f.text for f in fitted], test["label"].to_list(), icl.prompt_facts(fitted)


def measure_k(ctx: Context, k: int) -> dict:
    from tunebench.evaluation import answers
    from tunebench.methods import icl
    from tunebench.modeling import lm, prompts

    spec = icl_spec(ctx, k)
    cfg = spec.method_cfg
    words = prompts.verbalizers(spec.labels, cfg["verbalizers"])
    labels = list(words)
    backend = icl.LocalModel(spec, words)
    texts, gold, facts = prompts_for(spec, backend, words)

    def ours():
        return backend.label_probabilities(texts, [words[label] for label in labels])

    def naive():
        return lm.naive_generate(backend.model, backend.tokenizer, texts, cfg["max_new_tokens"], backend.max_length)

    # Warm-up: first calls pay one-time costs (allocator, kernels) that belong to neither side.
    backend.label_probabilities(texts[:2], [words[label] for label in labels])
    lm.naive_generate(backend.model, backend.tokenizer, texts[:2], cfg["max_new_tokens"], backend.max_length)
    naive_s, ours_s = [], []
    for _ in range(REPEATS):
        generated, seconds = timed(naive)
        naive_s.append(seconds)
        probs, seconds = timed(ours)
        ours_s.append(seconds)
    parsed = [answers.parse_label(a, words) for a in generated]
    predicted = [labels[i] for i in probs.argmax(1)]
    n = len(texts)
    return {
        "speedup": sum(naive_s) / sum(ours_s),
        "queries": n, "repeats": REPEATS,
        "naive_s": naive_s, "scoring_s": ours_s,
        "naive_examples_per_s": n * REPEATS / sum(naive_s), "scoring_examples_per_s": n * REPEATS / sum(ours_s),
        "naive_unparsed_rate": float(np.mean([p is None for p in parsed])),
        "scoring_accuracy": float(np.mean([p == g for p, g in zip(predicted, gold)])),
        "batch_size": cfg["batch_size"], "max_new_tokens": cfg["max_new_tokens"], "selection": cfg["selection"],
        **facts,
    }


def measure(ctx: Context) -> dict:
    torch.set_num_threads(ctx.threads)
    by_k = {k: measure_k(ctx, k) for k in SHOTS}
    n = by_k[SHOTS[0]]["queries"]
    return {
        "workload": (f"tiny T5 (tests/tiny_models.py, max_length {MAX_LENGTH}), {n} FPB 50Agree test prompts, "
                     f"default template, balanced demonstrations, k = {', '.join(map(str, SHOTS))}; scoring batch "
                     f"{by_k[SHOTS[0]]['batch_size']} vs generation of {by_k[SHOTS[0]]['max_new_tokens']} tokens "
                     f"one prompt at a time; alternated {REPEATS}× each; {ctx.threads} threads"),
        "values": {f"icl_scoring_speedup_k{k}": r["speedup"] for k, r in by_k.items()},
        "raw": {f"k{k}": r for k, r in by_k.items()},
    }
