"""Parsers for freely generated answers.

An answer that cannot be read is None — never silently mapped to a class (one peer benchmark maps it to
"neutral") and never dropped (another leaves failed answers out of the RMSE); `runner.score` counts it wrong
or charges it the configured penalty.
"""

from __future__ import annotations

import re

import numpy as np

# A word boundary that also treats '-' and apostrophes as part of a word, so "negative" is not found in
# "non-negative" or "negatively" (and "bullish" not in "un-bullish").
_BEFORE = r"(?<![\w'-])"
_AFTER = r"(?![\w'-])"

# A signed decimal: -0.5, +.25, −0.3 (Unicode minus), 1e-3. Not part of a word ("Q3") or of a longer number.
_NUMBER = re.compile(r"(?<![\w.])([-+\u2212]?)(\d+(?:\.\d*)?|\.\d+)(?:[eE]([-+]?\d+))?")


def parse_label(text: str | None, verbalizers: dict[str, str]) -> str | None:
    """The label whose answer word the text gives, or None.

    Rules (case-insensitive, whole words only): if the answer starts with a label word, that label; otherwise
    the label if exactly one label's word occurs anywhere; otherwise (none, or several different ones) None.
    """
    if not text or not text.strip():
        return None
    found: list[tuple[int, str]] = []
    for label, word in verbalizers.items():
        # Flexible whitespace inside multi-word answers ("very positive").
        pattern = r"\s+".join(re.escape(w) for w in word.split())
        for m in re.finditer(_BEFORE + pattern + _AFTER, text, flags=re.IGNORECASE):
            found.append((m.start(), label))
    if not found:
        return None
    first_pos, first_label = min(found)
    leading = text[:first_pos].strip(" \t\n\"'`*:.-([{")
    if not leading:
        return first_label
    labels = {label for _, label in found}
    return first_label if len(labels) == 1 else None


def parse_number(text: str | None) -> float | None:
    """The first signed decimal number in the text, or None (an empty answer or no number)."""
    if not text:
        return None
    m = _NUMBER.search(text)
    if not m:
        return None
    sign, digits, exponent = m.groups()
    value = float(f"{digits}e{exponent}" if exponent else digits)
    return -value if sign in ("-", "\u2212") else value


def probabilities(log_likelihoods: np.ndarray) -> np.ndarray:
    """Softmax over the answers: the model's distribution restricted to the label words."""
    z = log_likelihoods - log_likelihoods.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def answer_columns(loglik_mean: np.ndarray | None, generated: list[str] | None, words: dict | None,
                   decoding: str) -> dict:
    """Prediction columns of a prompted or fine-tuned generative model (icl and generative fine-tuning alike).

    prediction: the label with the highest length-normalised log-likelihood (score, both) or the parsed answer
    (generate); score_<label>: the softmax over labels of those log-likelihoods; answer: the generated text;
    generated_prediction (both): the parsed answer beside the scored prediction; unparsed (generate): the answer
    could not be read. For regression `words` is None and answers are parsed as numbers."""
    columns = {}
    if loglik_mean is not None:
        labels = list(words)
        probs = probabilities(loglik_mean)
        columns["prediction"] = [labels[i] for i in probs.argmax(1)]
        columns.update({f"score_{lab}": probs[:, j] for j, lab in enumerate(labels)})
    if generated is not None:
        parsed = [parse_label(a, words) for a in generated] if words else [parse_number(a) for a in generated]
        columns["answer"] = generated
        if decoding == "generate":
            columns.update(prediction=parsed, unparsed=[p is None for p in parsed])
        else:
            columns["generated_prediction"] = parsed
    return columns


# The three ways published evaluations score an answer that cannot be read: count it wrong (ours, and the only
# one that cannot flatter a model), map it to the neutral class (FinGPT's benchmarks), or leave it out (PIXIU /
# FinBen report metrics over the answers that parsed). Each is reported, so a number can be set beside a peer's.
PARSE_RULES = ("as_neutral", "dropped")


def neutral_label(labels: list[str]) -> str | None:
    return next((label for label in labels if "neutral" in label.lower()), None)


def parse_rule_metrics(gold: list, parsed: list, task: str, labels: list[str] | None) -> dict:
    """Metrics of parsed answers (None = unparsed) under the map-to-neutral and drop rules, prefixed
    `as_neutral_` and `dropped_` (count-as-wrong is the run's own metrics). For regression, `as_neutral` reads an
    unparsed answer as 0 (a neutral score)."""
    from tunebench.evaluation import metrics

    kept = [(g, p) for g, p in zip(gold, parsed) if p is not None]
    out = {"dropped_n": len(kept)}
    if task == "classification":
        neutral = neutral_label(labels)
        if neutral is not None:
            as_neutral = [neutral if p is None else p for p in parsed]
            out.update({f"as_neutral_{k}": v for k, v in metrics.classification_scalars(gold, as_neutral, labels).items()})
        if kept:
            g, p = zip(*kept)
            out.update({f"dropped_{k}": v for k, v in metrics.classification_scalars(list(g), list(p), labels).items()})
        return out
    as_zero = [0.0 if p is None else p for p in parsed]
    out.update({f"as_neutral_{k}": v for k, v in metrics.regression_scalars(gold, as_zero).items()})
    if len(kept) > 1:
        g, p = zip(*kept)
        out.update({f"dropped_{k}": v for k, v in metrics.regression_scalars(list(g), list(p)).items()})
    return out
