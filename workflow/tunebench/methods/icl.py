"""Strategy `icl`: in-context learning with a seq2seq or causal LM, or an OpenAI-compatible chat API.

Each test text gets a prompt with k demonstrations from the training split — one random or class-balanced draw
per run shared by every test text (seeded by the run's seed: several seeds are several draws; `draw:
per_query` draws afresh for each text), or the k training texts most similar to it by the retriever's
embeddings — cut to the model's context by dropping demonstrations first. Instruction-tuned chat models see
the prompt as the chat they were trained on (tunebench.modeling.prompts.ChatPrompt). Then
  decoding: score     the label words' log-likelihoods compared by a scoring rule (tunebench.modeling.scoring:
                      sum, mean, byte, calibrated, pmi), argmax (nothing unparseable),
  decoding: generate  a free answer read by tunebench.evaluation.answers (unreadable answers are counted wrong
                      for classification, charged `unparsed_penalty` for regression, which always generates),
  decoding: both      both from the same forward pass: predictions by scoring, the generated answers beside
                      them (the aggregate reports them as a run of their own, `<method>-gen`).
With several scoring rules (`scoring: [...]`) or several answer-word sets (the dataset's `verbalizers`), the
run first prompts a fixed sample of dev rows — the same demonstrations, drawn by the same seed — and keeps the
(answer words, rule) with the best dev macro-F1; test is prompted once, with that choice. The dev scores of
every candidate are recorded, and the test metrics of every candidate rule beside the chosen one.
A prompt prefix shared by all test texts (instruction + shared demonstrations) is computed once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from tunebench.evaluation import answers, metrics
from tunebench.modeling import lm, loading, prompts, scoring, training
from tunebench.modeling.api import ChatClient
from tunebench.spec import RunOutput, RunSpec


def run(spec: RunSpec) -> RunOutput:
    cfg = spec.method_cfg
    classification = spec.task == "classification"
    decoding = cfg["decoding"] if classification else "generate"
    if cfg["decoding"] != "generate" and not classification:
        raise ValueError(f"{spec.method}: regression needs `decoding: generate` (a number is not a label word)")
    if decoding != "generate" and spec.model_cfg["kind"] == "api":
        raise ValueError(f"{spec.method}: a chat API gives no answer likelihoods; use `decoding: generate`")
    rules = scoring.check_rules(cfg["scoring"], f"config key 'methods.{spec.method}.scoring'") \
        if decoding != "generate" else []
    sets = verbaliser_sets(spec)
    train, test = spec.split("train"), spec.test_rows()
    backend = APIModel(spec) if spec.model_cfg["kind"] == "api" else LocalModel(spec)

    choice = choose_on_dev(spec, backend, train, sets, rules) if len(sets) * len(rules) > 1 else None
    name = choice["verbaliser"] if choice else next(iter(sets))
    rule = choice["scoring"] if choice else (rules[0] if rules else None)
    t0 = time.perf_counter()
    prompted = prompt_rows(spec, backend, train, test, sets[name], rules, score=decoding != "generate",
                           generate=decoding != "score")
    eval_time = time.perf_counter() - t0

    words = sets[name]
    columns = answers.answer_columns(prompted.scores.rule(rule) if rule else None, prompted.answers.generated,
                                     words, decoding)
    predictions = pl.DataFrame({"id": test["id"], **columns,
                                "n_demonstrations": [f.n_demonstrations for f in prompted.fitted],
                                "prompt_truncated": [f.query_truncated for f in prompted.fitted]},
                               schema_overrides={"prediction": pl.String if classification else pl.Float64})
    fitted, result = prompted.fitted, prompted.answers
    info = {"k": cfg["k"], "selection": cfg["selection"], "demonstration_draw": demonstration_draw(cfg),
            "decoding": decoding, "template": prompted.prompter.format_name,
            "prompt_template": prompted.prompter.template.header + prompted.prompter.template.block,
            "scoring": rule, "scoring_candidates": " ".join(rules) or None,
            "verbaliser": name if classification else None,
            "verbaliser_words": " ".join(words.values()) if words else None,
            "prompt_selection": choice, "prompt_selection_time_s": choice["dev_time_s"] if choice else None,
            **prompt_facts(fitted), **prompted.scoring_cost,
            "eval_time_s": eval_time, "examples_per_s": len(fitted) / eval_time if eval_time else None,
            "tokens_run": result.prompt_tokens, "shared_prefix_tokens": result.shared_prefix_tokens,
            "train_rows": train.height, "test_rows": test.height, "trainable_params": 0,
            "demonstration_ids": demonstration_ids(train, prompted.chosen, cfg), **backend.facts(prompted.prompter)}
    extra = rule_metrics(spec, test, prompted.scores, rules) if len(rules) > 1 else {}
    return RunOutput(predictions, info, extra)


def verbaliser_sets(spec: RunSpec) -> dict[str | None, dict | None]:
    """The answer-word sets to choose from: the method's own `verbalizers` (fixed: one set, named 'method'),
    else the dataset's named `verbalizers` sets (chosen on dev), else the label names (one set, 'labels')."""
    if spec.task != "classification":
        return {None: None}
    own = spec.method_cfg["verbalizers"]
    if own:
        return {"method": prompts.verbalizers(spec.labels, own)}
    declared = spec.dataset_cfg.get("verbalizers") or {"labels": {}}
    return {name: prompts.verbalizers(spec.labels, words) for name, words in declared.items()}


def demonstration_draw(cfg: dict) -> str:
    """How the demonstrations were drawn, as runs.csv records it: none, similar, or selection/draw."""
    if not cfg["k"]:
        return "none"
    return "similar" if cfg["selection"] == "similar" else f"{cfg['selection']}/{cfg['draw']}"


def dev_rows(spec: RunSpec) -> pl.DataFrame:
    """The fixed dev sample the prompt choices are scored on (the same rows for every seed and method)."""
    dev = spec.split("dev")
    n = spec.method_cfg["max_dev_samples"]
    return dev.sample(n, seed=0).sort("id") if n and n < dev.height else dev


def choose_on_dev(spec: RunSpec, backend, train: pl.DataFrame, sets: dict, rules: list[str]) -> dict:
    """The (answer words, scoring rule) with the best dev macro-F1; ties go to the first declared (sets in the
    dataset's order, rules in the method's). Every candidate's dev score is returned with the choice."""
    t0 = time.perf_counter()
    dev = dev_rows(spec)
    metric = training.dev_metric(spec.task)[0]
    gold = dev["label"].to_list()
    by_candidate, best = {}, None
    for name, words in sets.items():
        prompted = prompt_rows(spec, backend, train, dev, words, rules, score=True, generate=False)
        labels = list(words)
        for rule in rules:
            predicted = [labels[i] for i in prompted.scores.rule(rule).argmax(1)]
            value = metrics.classification_scalars(gold, predicted, spec.labels)[metric]
            by_candidate[f"{name}/{rule}"] = value
            if best is None or value > best[0]:
                best = (value, name, rule)
    value, name, rule = best
    return {"verbaliser": name, "scoring": rule, "dev_metric": metric, "dev_value": value,
            "dev_by_candidate": by_candidate, "dev_rows": dev.height, "dev_time_s": time.perf_counter() - t0}


def rule_metrics(spec: RunSpec, test: pl.DataFrame, scores: scoring.LabelScores, rules: list[str]) -> dict:
    """Test metrics under every candidate rule (`<metric>_<rule>`): what the choice made on dev was worth, and
    the uncalibrated rules beside the calibrated ones. Reported, never used to choose."""
    labels, gold = list(spec.labels), test["label"].to_list()
    out = {}
    for rule in rules:
        predicted = [labels[i] for i in scores.rule(rule).argmax(1)]
        for key, value in metrics.classification_scalars(gold, predicted, spec.labels).items():
            if key in ("accuracy", "macro_f1"):
                out[f"{key}_{rule}"] = value
    return out


@dataclass
class Prompted:
    """Rows prompted with one answer-word set: their fitted prompts, demonstrations, answers and label scores."""

    prompter: "Prompter"
    fitted: list[prompts.FittedPrompt]
    chosen: list[list[int]]
    answers: lm.Answers
    scores: scoring.LabelScores | None
    scoring_cost: dict


def prompt_rows(spec: RunSpec, backend, train: pl.DataFrame, rows: pl.DataFrame, words: dict | None,
                rules: list[str], score: bool, generate: bool) -> Prompted:
    cfg = spec.method_cfg
    prompter = backend.prompter(spec, words)
    if cfg["k"] and not prompter.template.takes_demonstrations:
        raise ValueError(f"{spec.method}: k = {cfg['k']} needs a {{demonstrations}} placeholder in the template")
    if words:
        pool = list(zip(train["text"], (words[label] for label in train["label"])))
    else:
        pool = list(zip(train["text"], (prompts.format_number(t) for t in train["target"])))
    chosen = select_demonstrations(spec, train, rows)

    def fit(text: str, idx) -> prompts.FittedPrompt:
        return prompts.fit_prompt(prompter.format, text, [pool[j] for j in idx], prompter.count_tokens,
                                  prompter.limit)

    fitted = [fit(text, idx) for text, idx in zip(rows["text"], chosen)]
    contexts = list(dict.fromkeys(tuple(idx) for idx in chosen))
    index = {c: i for i, c in enumerate(contexts)}
    context_of = [index[tuple(idx)] for idx in chosen]
    # Demonstrations drawn for each text alone: the content-free prompts calibration renders with them run in
    # one group with the text, so the group's prefix (instruction and demonstrations) runs once.
    beside = score and len(contexts) > 1 and scoring.needs_content_free(rules)
    free_texts = [fit(text, c).text for c in contexts for text in cfg["content_free"]] if beside else []
    groups = context_of + [i for i, _ in enumerate(contexts) for _ in cfg["content_free"]] if beside else None
    result = backend.answer(prompter, [f.text for f in fitted] + free_texts, score=score, generate=generate,
                            groups=groups)
    result, free = split_answers(result, len(fitted))
    scores, cost = None, {}
    if score:
        scores, cost = scoring.label_scores(
            result.loglik, [prompter.format.continuation(w) for w in words.values()], prompter.answer_ids, rules,
            run_prompts=lambda texts: backend.answer(prompter, texts, score=True, generate=False).loglik,
            render=lambda text, context: fit(text, context).text, contexts=contexts, context_of=context_of,
            content_free=cfg["content_free"], premise_prompt=prompts.premise_prompt(prompter.format,
                                                                                    scoring.PMI_PREMISE),
            free=free if beside else None)
    return Prompted(prompter, fitted, chosen, result, scores, cost)


def split_answers(result: lm.Answers, n: int) -> tuple[lm.Answers, np.ndarray | None]:
    """The answers of the first n prompts, and the log-likelihoods of the prompts after them (None if none)."""
    if result.loglik is None or len(result.loglik) == n:
        return result, None
    head = lm.Answers(result.loglik[:n], result.loglik_mean[:n],
                      result.generated[:n] if result.generated is not None else None,
                      result.shared_prefix_tokens, result.prompt_tokens)
    return head, result.loglik[n:]


@dataclass
class Prompter:
    """How prompts are written for one answer-word set: the template, its rendering (plain or chat), the
    answers' token ids, and the token budget a prompt must fit."""

    template: prompts.Template
    format: object
    format_name: str
    answer_ids: list[list[int]] | None
    count_tokens: object
    limit: int


class LocalModel:
    """A seq2seq or causal LM through transformers."""

    def __init__(self, spec: RunSpec):
        cfg, model_cfg = spec.method_cfg, spec.model_cfg
        torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed)
        self.cfg, self.precision = cfg, training.resolve_precision(cfg["precision"])
        self.kind = model_cfg["kind"]
        self.tokenizer = loading.load_tokenizer(model_cfg, spec.model_dir)
        self.model = loading.load_generative(model_cfg, model_dir=spec.model_dir)

    def prompter(self, spec: RunSpec, words: dict | None) -> Prompter:
        cfg, model_cfg = spec.method_cfg, spec.model_cfg
        template = prompts.Template.parse(cfg["template"], spec.task, list(words.values()) if words else None)
        fmt = prompts.prompt_format(template, self.tokenizer, model_cfg)
        answer_ids = lm.answer_token_ids(self.tokenizer, fmt, self.kind, words)
        special = fmt.add_special_tokens
        # The answer must fit after the prompt (a causal model's context holds both).
        limit = model_cfg["max_length"]
        if self.kind == "causal":
            longest = max(len(a) for a in answer_ids) if answer_ids else 0
            limit -= max(longest, cfg["max_new_tokens"] if cfg["decoding"] != "score" else 0)
        return Prompter(template, fmt, "chat" if isinstance(fmt, prompts.ChatPrompt) else "plain", answer_ids,
                        lambda text: len(self.tokenizer(text, add_special_tokens=special)["input_ids"]), limit)

    def answer(self, prompter: Prompter, texts: list[str], score: bool, generate: bool,
               groups: list | None = None) -> lm.Answers:
        with lm.inference_autocast(self.precision):
            return lm.answer_prompts(self.model, self.tokenizer, texts, prompter.answer_ids if score else None,
                                     self.cfg["max_new_tokens"] if generate else 0, self.cfg["batch_size"],
                                     prompter.format.add_special_tokens, groups)

    def facts(self, prompter: Prompter) -> dict:
        return {"device": str(self.model.device), "precision": self.precision,
                "attention": training.attention_implementation(self.model),
                "total_params": loading.count_parameters(self.model)[1],
                "answer_tokens": [len(a) for a in prompter.answer_ids] if prompter.answer_ids else None}


class APIModel:
    """An OpenAI-compatible chat endpoint; answers are cached on disk (see tunebench.modeling.api)."""

    def __init__(self, spec: RunSpec):
        cfg, model_cfg = spec.method_cfg, spec.model_cfg
        self.cfg, self.max_length = cfg, model_cfg["max_length"]
        self.client = ChatClient(model_cfg["base_url"], model_cfg["path"], model_cfg["api_key_env"],
                                 spec.extra["api_cache_dir"], cfg["timeout_s"], cfg["max_retries"],
                                 cfg["concurrency"])

    def prompter(self, spec: RunSpec, words: dict | None) -> Prompter:
        template = prompts.Template.parse(self.cfg["template"], spec.task, list(words.values()) if words else None)
        return Prompter(template, template, "plain", None, approx_tokens,
                        self.max_length - self.cfg["max_new_tokens"])

    def answer(self, prompter: Prompter, texts: list[str], score: bool, generate: bool,
               groups: list | None = None) -> lm.Answers:
        generated = self.client.complete_all(texts, self.cfg["temperature"], self.cfg["max_new_tokens"])
        return lm.Answers(None, None, generated, 0, sum(approx_tokens(t) for t in texts))

    def facts(self, prompter: Prompter) -> dict:
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
