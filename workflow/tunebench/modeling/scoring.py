"""Label scoring rules: how the log-likelihoods of the answer words become a prediction.

A prompted model's label scores are only as good as the rule that compares them, and the rules disagree:
  sum         log p(answer | prompt), summed over the answer's tokens (lm-evaluation-harness's `acc`)
  mean        the same divided by the answer's token count: a label that takes two tokens (bear+ish) is not
              penalised against one that takes one (neutral) — but it is favoured whenever p(first token) beats
              p(neutral) squared
  byte        the same divided by the answer's length in UTF-8 bytes (lm-evaluation-harness's `acc_norm`, which
              divides by characters; the two agree on ASCII answer words)
  calibrated  contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): the label distribution the same
              prompt gives content-free inputs ("N/A", "", "[MASK]"; averaged) is divided out, so a prompt whose
              demonstrations push every answer toward one label no longer answers that label for every text
  pmi         domain-conditional PMI (Holtzman et al. 2021): log p(answer | prompt) − log p(answer | premise),
              the premise a bare domain cue such as "Answer:", so an answer word that is likely anywhere does not
              win for being likely
All five come from one scoring pass: the content-free prompts ride along with the real ones (they share the
instruction and demonstrations, so the shared-prefix cache serves them), and the premise is one prompt more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULES = ("mean", "sum", "byte", "calibrated", "pmi")
CONTENT_FREE = ("N/A", "", "[MASK]")
PMI_PREMISE = "Answer:"


@dataclass
class LabelScores:
    """What the rules need, for n prompts and L answers.

    loglik: (n, L) log p(answer | prompt), summed over the answer's tokens.
    answer_tokens: (L,) tokens per answer; answer_bytes: (L,) UTF-8 bytes of each answer as written.
    content_free: (n, L) mean over the content-free inputs of the label distribution (normalised over the L
      answers) that each prompt's context gives them, or None.
    premise: (L,) log p(answer | premise), or None.
    """

    loglik: np.ndarray
    answer_tokens: np.ndarray
    answer_bytes: np.ndarray
    content_free: np.ndarray | None = None
    premise: np.ndarray | None = None

    def rule(self, name: str) -> np.ndarray:
        """(n, L) scores under rule `name`: the prediction is their argmax."""
        if name == "sum":
            return self.loglik
        if name == "mean":
            return self.loglik / self.answer_tokens
        if name == "byte":
            return self.loglik / self.answer_bytes
        if name == "calibrated":
            if self.content_free is None:
                raise ValueError("scoring 'calibrated' needs the content-free prompts' scores")
            return log_normalise(self.loglik) - np.log(self.content_free)
        if name == "pmi":
            if self.premise is None:
                raise ValueError("scoring 'pmi' needs the premise's scores")
            return self.loglik - self.premise
        raise ValueError(f"unknown scoring rule '{name}' (known: {', '.join(RULES)})")

    def probabilities(self, name: str) -> np.ndarray:
        """The rule's scores as a distribution over the answers (softmax), for score_<label> columns."""
        return np.exp(log_normalise(self.rule(name)))


def log_normalise(scores: np.ndarray) -> np.ndarray:
    """log softmax over the last axis."""
    z = scores - scores.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def content_free_distribution(loglik: np.ndarray) -> np.ndarray:
    """(m, L) summed log-likelihoods of m content-free inputs → their mean label distribution (L,), as Zhao et
    al. average the normalised probabilities of "N/A", "" and "[MASK]"."""
    return np.exp(log_normalise(loglik)).mean(axis=0)


def needs_content_free(rules) -> bool:
    return "calibrated" in rules


def needs_premise(rules) -> bool:
    return "pmi" in rules


def check_rules(rules, where: str) -> list[str]:
    """The scoring candidates as a list (one rule or several, chosen on dev), each a known rule."""
    rules = [rules] if isinstance(rules, str) else list(rules)
    unknown = [r for r in rules if r not in RULES]
    if unknown or not rules:
        raise ValueError(f"{where}: unknown scoring rule(s) {unknown} (known: {', '.join(RULES)})")
    return rules


def label_scores(loglik: np.ndarray, answers: list[str], answer_ids: list[list[int]], rules, run_prompts,
                 render, contexts: list | None = None, context_of: list[int] | None = None,
                 content_free=CONTENT_FREE, premise: str = PMI_PREMISE, premise_prompt: str | None = None,
                 free: np.ndarray | None = None) -> tuple[LabelScores, dict]:
    """The LabelScores of prompts whose summed answer log-likelihoods are `loglik` (n, L), with the extra
    prompts the rules need, and what those cost.

    answers: each answer as it follows the prompt (its bytes normalise `byte`); answer_ids: its tokens.
    run_prompts(prompts) -> (n', L) summed log-likelihoods of the same answers after other prompts.
    render(text, context) -> the prompt of `text` in `context` (its demonstrations, fitted to the model).
    contexts / context_of: the distinct demonstration sets and which one each prompt used (default: one
      context, no demonstrations); the content-free inputs are rendered in each context.
    premise_prompt: the premise rendered as the model reads it (prompts.premise_prompt).
    free: the content-free prompts' log-likelihoods if the caller ran them already (rows: each context's inputs
      in turn), e.g. beside prompts that share their demonstrations' prefix.
    """
    import time

    contexts = contexts if contexts is not None else [[]]
    context_of = np.asarray(context_of if context_of is not None else [0] * len(loglik))
    scores = LabelScores(loglik, np.array([len(a) for a in answer_ids], dtype=float),
                         np.array([len(a.encode("utf-8")) for a in answers], dtype=float))
    cost = {}
    if needs_content_free(rules):
        t0 = time.perf_counter()
        ran_here = free is None
        if ran_here:
            free = run_prompts([render(text, c) for c in contexts for text in content_free])
        per_context = free.reshape(len(contexts), len(content_free), -1)
        by_context = np.stack([content_free_distribution(x) for x in per_context])
        scores.content_free = by_context[context_of]
        cost.update(content_free_prompts=len(contexts) * len(content_free),
                    # run beside the prompts, their time is the prompts' (eval_time_s)
                    content_free_time_s=time.perf_counter() - t0 if ran_here else None,
                    # the bias calibration divides out, averaged over the contexts (one for a shared draw)
                    content_free_distribution=[round(float(p), 4) for p in by_context.mean(axis=0)])
    if needs_premise(rules):
        t0 = time.perf_counter()
        scores.premise = run_prompts([premise_prompt if premise_prompt is not None else premise])[0]
        cost["premise_time_s"] = time.perf_counter() - t0
    return scores, cost
