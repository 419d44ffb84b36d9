"""Strategy `icl`: in-context learning with a seq2seq or causal LM, or an OpenAI-compatible chat API.

Each test text gets a prompt with k demonstrations from the training split (random or class-balanced draws
seeded by the run's seed, or the k most similar by the retriever's embeddings), cut to the model's max_length
by dropping demonstrations first. Then either
  decoding: score     the log-likelihood of each label word, argmax (nothing is unparseable), or
  decoding: generate  a free answer read by `answers`; an unreadable answer is None — counted wrong for
                      classification, charged `unparsed_penalty` for regression (which always generates).
"""

from __future__ import annotations

import math
import time

import numpy as np
import polars as pl
import torch

from tunebench.evaluation import answers
from tunebench.modeling import lm, prompts
from tunebench.modeling.api import ChatClient
from tunebench.modeling.loading import count_parameters
from tunebench.runner import RunOutput, RunSpec


def run(spec: RunSpec) -> RunOutput:
    cfg = spec.method_cfg
    classification = spec.task == "classification"
    if cfg["decoding"] == "score" and not classification:
        raise ValueError(f"{spec.method}: regression needs `decoding: generate` (a number is not a label word)")
    if cfg["decoding"] == "score" and spec.model_cfg["kind"] == "api":
        raise ValueError(f"{spec.method}: a chat API gives no answer likelihoods; use `decoding: generate`")

    train, test = spec.split("train"), evaluation_rows(spec)
    words = prompts.verbalizers(spec.labels, cfg["verbalizers"]) if classification else None
    template = prompts.Template.parse(cfg["template"], spec.task, list(words.values()) if words else None)
    if cfg["k"] and not template.takes_demonstrations:
        raise ValueError(f"{spec.method}: k = {cfg['k']} needs a {{demonstrations}} placeholder in the template")
    if classification:
        pool = list(zip(train["text"], (words[label] for label in train["label"])))
    else:
        pool = list(zip(train["text"], (prompts.format_number(t) for t in train["target"])))
    chosen = select_demonstrations(spec, train, test)

    backend = APIModel(spec) if spec.model_cfg["kind"] == "api" else LocalModel(spec, words)
    fitted = [prompts.fit_prompt(template, text, [pool[j] for j in idx], backend.count_tokens, backend.limit)
              for text, idx in zip(test["text"], chosen)]
    texts = [f.text for f in fitted]

    t0 = time.perf_counter()
    columns, extra_metrics = {}, {}
    if cfg["decoding"] == "score":
        labels = list(words)
        probs = backend.label_probabilities(texts, [words[lab] for lab in labels])
        columns["prediction"] = [labels[i] for i in probs.argmax(1)]
        columns.update({f"score_{lab}": probs[:, j] for j, lab in enumerate(labels)})
    else:
        generated = backend.generate(texts)
        if classification:
            parsed = [answers.parse_label(a, words) for a in generated]
        else:
            parsed = [answers.parse_number(a) for a in generated]
            extra_metrics["coverage"] = sum(p is not None for p in parsed) / max(len(parsed), 1)
        columns.update(prediction=parsed, answer=generated, unparsed=[p is None for p in parsed])
    eval_time = time.perf_counter() - t0

    predictions = pl.DataFrame({"id": test["id"], **columns,
                                "n_demonstrations": [f.n_demonstrations for f in fitted]},
                               schema_overrides={"prediction": pl.String if classification else pl.Float64})
    info = {"k": cfg["k"], "selection": cfg["selection"], "decoding": cfg["decoding"], **prompt_facts(fitted),
            "eval_time_s": eval_time, "examples_per_s": len(texts) / eval_time if eval_time else None,
            "train_rows": train.height, "test_rows": test.height, "trainable_params": 0, **backend.facts()}
    return RunOutput(predictions, info, extra_metrics)


class LocalModel:
    """A seq2seq or causal LM through transformers."""

    def __init__(self, spec: RunSpec, words: dict | None):
        cfg, model_cfg = spec.method_cfg, spec.model_cfg
        torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed)
        self.cfg, self.max_length = cfg, model_cfg["max_length"]
        self.tokenizer, self.model = lm.load_tokenizer(model_cfg), lm.load_model(model_cfg)
        self.count_tokens, self.limit = lm.token_counter(self.tokenizer), model_cfg["max_length"]
        if model_cfg["kind"] == "causal":   # the answer must fit after the prompt
            if cfg["decoding"] == "score":
                self.limit -= max(len(lm.continuation_ids(self.tokenizer, w)) for w in words.values())
            else:
                self.limit -= cfg["max_new_tokens"]

    def label_probabilities(self, texts: list[str], answer_words: list[str]) -> np.ndarray:
        loglik = lm.score_labels(self.model, self.tokenizer, texts, answer_words, self.cfg["batch_size"],
                                 self.max_length)
        return lm.probabilities(loglik)

    def generate(self, texts: list[str]) -> list[str]:
        return lm.generate(self.model, self.tokenizer, texts, self.cfg["max_new_tokens"], self.cfg["batch_size"],
                           self.max_length)

    def facts(self) -> dict:
        return {"device": str(self.model.device), "precision": str(self.model.dtype).removeprefix("torch."),
                "total_params": count_parameters(self.model)[1]}


class APIModel:
    """An OpenAI-compatible chat endpoint; answers are cached on disk (see tunebench.api)."""

    def __init__(self, spec: RunSpec):
        cfg, model_cfg = spec.method_cfg, spec.model_cfg
        self.cfg = cfg
        self.client = ChatClient(model_cfg["base_url"], model_cfg["path"], model_cfg["api_key_env"],
                                 spec.extra["api_cache_dir"], cfg["timeout_s"],
                                 cfg["max_retries"], cfg["concurrency"])
        self.count_tokens, self.limit = approx_tokens, model_cfg["max_length"] - cfg["max_new_tokens"]

    def generate(self, texts: list[str]) -> list[str]:
        return self.client.complete_all(texts, self.cfg["temperature"], self.cfg["max_new_tokens"])

    def facts(self) -> dict:
        return {"device": "api", "prompt_tokens_estimated": True, "api_requests": self.client.requests_sent,
                "api_cache_hits": self.client.cache_hits}


def prompt_facts(fitted: list[prompts.FittedPrompt]) -> dict:
    """How many demonstrations fit, and how long the prompts were."""
    shots = np.array([f.n_demonstrations for f in fitted] or [0])
    tokens = np.array([f.tokens for f in fitted] or [0])
    return {"demonstrations_mean": float(shots.mean()), "demonstrations_min": int(shots.min()),
            "queries_truncated": sum(f.query_truncated for f in fitted),
            "prompt_tokens_mean": float(tokens.mean()), "prompt_tokens_max": int(tokens.max()),
            "prompt_tokens_total": int(tokens.sum())}


def evaluation_rows(spec: RunSpec) -> pl.DataFrame:
    """The test split, or a fixed sample of `max_test_samples` rows (seed 0, so every method and seed is
    scored on the same rows), in the split's order."""
    test = spec.split("test")
    n = spec.method_cfg.get("max_test_samples")
    if n and n < test.height:
        test = test.with_row_index("_row").sample(n, seed=0).sort("_row").drop("_row")
    return test


def select_demonstrations(spec: RunSpec, train: pl.DataFrame, test: pl.DataFrame) -> list[list[int]]:
    """Training-row indices of each test text's demonstrations (nearest the query last)."""
    cfg = spec.method_cfg
    k, selection = cfg["k"], cfg["selection"]
    if k == 0:
        return [[] for _ in range(test.height)]
    if selection == "random":
        return prompts.random_demonstrations(train.height, test.height, k, spec.seed)
    if selection == "balanced":
        if spec.task == "classification":
            strata = train["label"].to_list()
        else:
            strata = prompts.regression_strata(train["target"].to_numpy())
        return prompts.balanced_demonstrations(strata, test.height, k, spec.seed)
    if not spec.embeddings_path:
        raise ValueError(f"{spec.method}: selection 'similar' needs `retriever`, an encoder model whose cached "
                         f"embeddings rank the training examples")
    return prompts.similar_demonstrations(prompts.load_embeddings(spec.embeddings_path, test["id"].to_list()),
                                          prompts.load_embeddings(spec.embeddings_path, train["id"].to_list()), k)


def approx_tokens(text: str) -> int:
    """A conservative token count for an API model whose tokenizer is not at hand (about 3 characters per
    token; English BPE averages about 4)."""
    return math.ceil(len(text) / 3)
