"""Strategy `icl`: in-context learning with a seq2seq or causal LM, or an OpenAI-compatible chat API.

Each test text gets a prompt with k demonstrations from the training split — one random or class-balanced draw
per run shared by every test text (seeded by the run's seed: several seeds are several draws; `draw:
per_query` draws afresh for each text), or the k training texts most similar to it by the retriever's
embeddings — cut to the model's context by dropping demonstrations first. Instruction-tuned chat models see
the prompt as the chat they were trained on (tunebench.modeling.prompts.ChatPrompt). Then
  decoding: score     length-normalised log-likelihood of each label word, argmax (nothing unparseable),
  decoding: generate  a free answer read by tunebench.evaluation.answers (unreadable answers are counted wrong
                      for classification, charged `unparsed_penalty` for regression, which always generates),
  decoding: both      both from the same forward pass: predictions by scoring, the generated answers beside
                      them (the aggregate reports them as a run of their own, `<method>-gen`).
A prompt prefix shared by all test texts (instruction + shared demonstrations) is computed once.
"""

from __future__ import annotations

import math
import time

import numpy as np
import polars as pl
import torch

from tunebench.evaluation import answers
from tunebench.modeling import lm, loading, prompts, training
from tunebench.modeling.api import ChatClient
from tunebench.runner import RunOutput, RunSpec


def run(spec: RunSpec) -> RunOutput:
    cfg = spec.method_cfg
    classification = spec.task == "classification"
    decoding = cfg["decoding"] if classification else "generate"
    if cfg["decoding"] != "generate" and not classification:
        raise ValueError(f"{spec.method}: regression needs `decoding: generate` (a number is not a label word)")
    if decoding != "generate" and spec.model_cfg["kind"] == "api":
        raise ValueError(f"{spec.method}: a chat API gives no answer likelihoods; use `decoding: generate`")

    train, test = spec.split("train"), spec.test_rows()
    words = prompts.verbalizers(spec.labels, cfg["verbalizers"]) if classification else None
    template = prompts.Template.parse(cfg["template"], spec.task, list(words.values()) if words else None)
    if cfg["k"] and not template.takes_demonstrations:
        raise ValueError(f"{spec.method}: k = {cfg['k']} needs a {{demonstrations}} placeholder in the template")
    if classification:
        pool = list(zip(train["text"], (words[label] for label in train["label"])))
    else:
        pool = list(zip(train["text"], (prompts.format_number(t) for t in train["target"])))
    chosen = select_demonstrations(spec, train, test)

    backend = APIModel(spec) if spec.model_cfg["kind"] == "api" else LocalModel(spec, template, words)
    fitted = [prompts.fit_prompt(backend.format, text, [pool[j] for j in idx], backend.count_tokens,
                                 backend.limit) for text, idx in zip(test["text"], chosen)]
    t0 = time.perf_counter()
    result = backend.answer([f.text for f in fitted], score=decoding != "generate", generate=decoding != "score")
    eval_time = time.perf_counter() - t0

    columns = answers.answer_columns(result.loglik_mean, result.generated, words, decoding)
    predictions = pl.DataFrame({"id": test["id"], **columns, "n_demonstrations": [f.n_demonstrations for f in fitted],
                                "prompt_truncated": [f.query_truncated for f in fitted]},
                               schema_overrides={"prediction": pl.String if classification else pl.Float64})
    info = {"k": cfg["k"], "selection": cfg["selection"], "decoding": decoding, "template": backend.format_name,
            "prompt_template": template.header + template.block, **prompt_facts(fitted),
            "eval_time_s": eval_time, "examples_per_s": len(fitted) / eval_time if eval_time else None,
            "tokens_run": result.prompt_tokens, "shared_prefix_tokens": result.shared_prefix_tokens,
            "train_rows": train.height, "test_rows": test.height, "trainable_params": 0,
            "demonstration_ids": demonstration_ids(train, chosen, cfg), **backend.facts()}
    return RunOutput(predictions, info)


class LocalModel:
    """A seq2seq or causal LM through transformers."""

    def __init__(self, spec: RunSpec, template: prompts.Template, words: dict | None):
        cfg, model_cfg = spec.method_cfg, spec.model_cfg
        torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed)
        self.cfg, self.precision = cfg, training.resolve_precision(cfg["precision"])
        self.tokenizer = loading.load_tokenizer(model_cfg, spec.model_dir)
        self.model = loading.load_generative(model_cfg, model_dir=spec.model_dir)
        self.format = prompts.prompt_format(template, self.tokenizer, model_cfg)
        self.format_name = "chat" if isinstance(self.format, prompts.ChatPrompt) else "plain"
        self.answer_ids = lm.answer_token_ids(self.tokenizer, self.format, model_cfg["kind"], words)
        special = self.format.add_special_tokens
        self.count_tokens = lambda text: len(self.tokenizer(text, add_special_tokens=special)["input_ids"])
        # The answer must fit after the prompt (a causal model's context holds both).
        self.limit = model_cfg["max_length"]
        if model_cfg["kind"] == "causal":
            longest = max(len(a) for a in self.answer_ids) if self.answer_ids else 0
            self.limit -= max(longest, cfg["max_new_tokens"] if cfg["decoding"] != "score" else 0)

    def answer(self, texts: list[str], score: bool, generate: bool) -> lm.Answers:
        with lm.inference_autocast(self.precision):
            return lm.answer_prompts(self.model, self.tokenizer, texts, self.answer_ids if score else None,
                                     self.cfg["max_new_tokens"] if generate else 0, self.cfg["batch_size"],
                                     self.format.add_special_tokens)

    def facts(self) -> dict:
        return {"device": str(self.model.device), "precision": self.precision,
                "attention": training.attention_implementation(self.model),
                "total_params": loading.count_parameters(self.model)[1],
                "answer_tokens": [len(a) for a in self.answer_ids] if self.answer_ids else None}


class APIModel:
    """An OpenAI-compatible chat endpoint; answers are cached on disk (see tunebench.modeling.api)."""

    format_name = "plain"

    def __init__(self, spec: RunSpec):
        cfg, model_cfg = spec.method_cfg, spec.model_cfg
        self.cfg = cfg
        self.format = prompts.Template.parse(cfg["template"], spec.task,
                                             list(prompts.verbalizers(spec.labels, cfg["verbalizers"]).values())
                                             if spec.task == "classification" else None)
        self.client = ChatClient(model_cfg["base_url"], model_cfg["path"], model_cfg["api_key_env"],
                                 spec.extra["api_cache_dir"], cfg["timeout_s"], cfg["max_retries"],
                                 cfg["concurrency"])
        self.count_tokens, self.limit = approx_tokens, model_cfg["max_length"] - cfg["max_new_tokens"]

    def answer(self, texts: list[str], score: bool, generate: bool) -> lm.Answers:
        generated = self.client.complete_all(texts, self.cfg["temperature"], self.cfg["max_new_tokens"])
        return lm.Answers(None, None, generated, 0, sum(approx_tokens(t) for t in texts))

    def facts(self) -> dict:
        return {"device": "api", "prompt_tokens_estimated": True, "api_requests": self.client.requests_sent,
                "api_cache_hits": self.client.cache_hits}


def prompt_facts(fitted: list[prompts.FittedPrompt]) -> dict:
    """How many demonstrations fit, how many queries had to be cut, and how long the prompts were."""
    shots = np.array([f.n_demonstrations for f in fitted] or [0])
    tokens = np.array([f.tokens for f in fitted] or [0])
    return {"demonstrations_mean": float(shots.mean()), "demonstrations_min": int(shots.min()),
            "queries_truncated": sum(f.query_truncated for f in fitted),
            "prompt_tokens_mean": float(tokens.mean()), "prompt_tokens_max": int(tokens.max()),
            "prompt_tokens_total": int(tokens.sum())}


def select_demonstrations(spec: RunSpec, train: pl.DataFrame, test: pl.DataFrame) -> list[list[int]]:
    """Training-row indices of each test text's demonstrations (nearest the query last)."""
    cfg = spec.method_cfg
    k, selection = cfg["k"], cfg["selection"]
    draws = test.height if cfg["draw"] == "per_query" else 1
    if k == 0:
        return [[] for _ in range(test.height)]
    if selection == "random":
        chosen = prompts.random_demonstrations(train.height, draws, k, spec.seed)
    elif selection == "balanced":
        if spec.task == "classification":
            strata = train["label"].to_list()
        else:
            strata = prompts.regression_strata(train["target"].to_numpy())
        chosen = prompts.balanced_demonstrations(strata, draws, k, spec.seed)
    else:
        if not spec.embeddings_path:
            raise ValueError(f"{spec.method}: selection 'similar' needs `retriever`, an encoder model whose "
                             f"cached embeddings rank the training examples")
        return prompts.similar_demonstrations(
            prompts.load_embeddings(spec.embeddings_path, test["id"].to_list()),
            prompts.load_embeddings(spec.embeddings_path, train["id"].to_list()), k)
    return chosen * test.height if draws == 1 else chosen


def demonstration_ids(train: pl.DataFrame, chosen: list[list[int]], cfg: dict) -> list[str] | None:
    """The ids of a draw shared by every test text (recorded in metrics.json; per-query draws are not)."""
    if not chosen or cfg["selection"] == "similar" or cfg["draw"] == "per_query":
        return None
    return train["id"].gather(chosen[0]).to_list() if chosen[0] else []


def approx_tokens(text: str) -> int:
    """A conservative token count for an API model whose tokenizer is not at hand (about 3 characters per
    token; English BPE averages about 4)."""
    return math.ceil(len(text) / 3)
