"""Prompts for in-context learning and text-to-label fine-tuning: templates, verbalisers, demonstrations.

A template is plain text with three placeholders:
  {labels}          the answer words, e.g. "negative, neutral or positive" (optional)
  {demonstrations}  where the worked examples go (required when k > 0)
  {text}            the input
Everything after {demonstrations} is the *example block*: each demonstration is that block filled with the
demonstration's text and followed by " <answer>" and a blank line, so demonstrations and the query look alike.

The documented default per task (used when a method's `template` is null) is in DEFAULT_TEMPLATES: an
instruction naming the answer words or the number range, then "Text: ...\nAnswer:" blocks.

Instruction-tuned chat models (a tokenizer with a chat template) get the same prompt as the conversation they
were trained on (ChatPrompt): the instruction as the system message, each demonstration as a user turn (the
example block) answered by an assistant turn, the query as the last user turn, then the assistant's turn opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_TEMPLATES = {
    "classification": (
        "Classify the sentiment of the financial text as {labels}. Answer with one word.\n\n"
        "{demonstrations}Text: {text}\nAnswer:"
    ),
    "regression": (
        "Rate the sentiment of the financial text as a number from -1 (very negative) to 1 (very positive).\n\n"
        "{demonstrations}Text: {text}\nAnswer:"
    ),
}


def verbalizers(labels: list[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Label → answer word: the label name unless the config gives another word."""
    overrides = overrides or {}
    unknown = set(overrides) - set(labels)
    if unknown:
        raise ValueError(f"verbalizers name unknown labels {sorted(unknown)} (labels: {labels})")
    words = {label: overrides.get(label, label) for label in labels}
    if len({w.lower() for w in words.values()}) < len(words):
        raise ValueError(f"verbalizers must be distinct words, got {words}")
    return words


def format_number(value: float) -> str:
    """How a regression target is written as an answer (signed, two decimals)."""
    return f"{value:.2f}"


@dataclass(frozen=True)
class Template:
    header: str   # the instruction, with {labels} already filled
    block: str    # the example block, holding {text}
    takes_demonstrations: bool

    @classmethod
    def parse(cls, template: str | None, task: str, answer_words: list[str] | None = None) -> Template:
        template = template or DEFAULT_TEMPLATES[task]
        if "{text}" not in template:
            raise ValueError("a prompt template needs a {text} placeholder")
        if answer_words:
            listed = ", ".join(answer_words[:-1]) + " or " + answer_words[-1]
            template = template.replace("{labels}", listed)
        header, sep, block = template.partition("{demonstrations}")
        if sep and "{text}" not in block:
            raise ValueError("{text} must come after {demonstrations}: the query follows its examples")
        return cls(header, block, True) if sep else cls("", header, False)

    add_special_tokens = True   # a plain prompt is tokenised like any text (BOS / EOS as the tokenizer adds)

    def fill(self, text: str) -> str:
        return self.block.replace("{text}", text)   # str.replace, not str.format: texts may hold braces

    def render(self, text: str, demonstrations: list[tuple[str, str]] = ()) -> str:
        """The prompt for `text` after the (text, answer) demonstrations, in order."""
        if demonstrations and not self.takes_demonstrations:
            raise ValueError("k > 0 needs a {demonstrations} placeholder in the template")
        shots = "".join(self.fill(t) + self.continuation(a) + "\n\n" for t, a in demonstrations)
        return self.header + shots + self.fill(text)

    @staticmethod
    def continuation(answer: str) -> str:
        """How an answer follows its prompt ("Answer:" + " positive")."""
        return " " + answer


@dataclass(frozen=True)
class ChatPrompt:
    """A template rendered as the chat an instruction-tuned model was trained on (its tokenizer's template)."""

    template: Template
    tokenizer: object
    add_special_tokens = False  # the chat template writes the special tokens itself

    @property
    def takes_demonstrations(self) -> bool:
        return self.template.takes_demonstrations

    def messages(self, text: str, demonstrations: list[tuple[str, str]] = ()) -> list[dict]:
        if demonstrations and not self.template.takes_demonstrations:
            raise ValueError("k > 0 needs a {demonstrations} placeholder in the template")
        system = self.template.header.strip()
        messages = [{"role": "system", "content": system}] if system else []
        for shot, answer in demonstrations:
            messages += [{"role": "user", "content": self.template.fill(shot).strip()},
                         {"role": "assistant", "content": answer}]
        return messages + [{"role": "user", "content": self.template.fill(text).strip()}]

    def render(self, text: str, demonstrations: list[tuple[str, str]] = ()) -> str:
        return self.tokenizer.apply_chat_template(self.messages(text, demonstrations), tokenize=False,
                                                  add_generation_prompt=True)

    def render_answered(self, text: str, answer: str) -> str:
        """The whole conversation with the assistant's answer, as a fine-tuning example."""
        messages = self.messages(text) + [{"role": "assistant", "content": answer}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    @staticmethod
    def continuation(answer: str) -> str:
        return answer   # the assistant's turn starts on a fresh line


def premise_prompt(fmt, premise: str) -> str:
    """A bare domain cue ("Answer:") as the model would read it, with no instruction, demonstration or text:
    the condition of domain-conditional PMI (tunebench.modeling.scoring)."""
    if isinstance(fmt, ChatPrompt):
        return fmt.tokenizer.apply_chat_template([{"role": "user", "content": premise}], tokenize=False,
                                                 add_generation_prompt=True)
    return premise


def prompt_format(template: Template, tokenizer, model_cfg: dict):
    """The chat form for instruction-tuned causal models whose tokenizer has a chat template (unless the model
    entry sets `chat_template: false`), the plain template otherwise."""
    use_chat = model_cfg.get("chat_template", True) and model_cfg["kind"] == "causal"
    if use_chat and getattr(tokenizer, "chat_template", None):
        return ChatPrompt(template, tokenizer)
    return template


# --- Demonstration selection: one list of training-row indices per query, nearest the query last ---------------

def random_demonstrations(n_train: int, n_queries: int, k: int, seed: int) -> list[list[int]]:
    """k training rows per query, drawn uniformly without replacement (a fresh draw for every query)."""
    rng = np.random.default_rng(seed)
    k = min(k, n_train)
    return [rng.choice(n_train, size=k, replace=False).tolist() for _ in range(n_queries)]


def balanced_demonstrations(strata: list, n_queries: int, k: int, seed: int) -> list[list[int]]:
    """k training rows per query spread evenly over the strata (classes); the k mod C extra shots go to
    randomly chosen strata, and the order is shuffled so no class always sits next to the query."""
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    out = []
    for _ in range(n_queries):
        counts = np.full(len(groups), k // len(groups))
        counts[rng.choice(len(groups), size=k % len(groups), replace=False)] += 1
        chosen = np.concatenate([rng.choice(g, size=min(c, len(g)), replace=False)
                                 for g, c in zip(groups, counts)]).astype(int)
        out.append(rng.permutation(chosen).tolist())
    return out


def regression_strata(targets) -> np.ndarray:
    """Tercile of each target (0 low, 1 middle, 2 high): the 'classes' balanced selection spreads over."""
    targets = np.asarray(targets, dtype=float)
    return np.digitize(targets, np.quantile(targets, [1 / 3, 2 / 3]))


def similar_demonstrations(query_vectors: np.ndarray, train_vectors: np.ndarray, k: int,
                           chunk: int = 1024) -> list[list[int]]:
    """The k training rows with the highest cosine similarity to each query, least similar first, so the
    closest example sits next to the query and truncation drops the least similar ones."""
    q = _unit_rows(query_vectors)
    t = _unit_rows(train_vectors)
    k = min(k, len(t))
    out = []
    for start in range(0, len(q), chunk):
        sims = q[start:start + chunk] @ t.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k else np.zeros((len(sims), 0), dtype=int)
        for row, idx in zip(sims, top):
            out.append(idx[np.argsort(row[idx], kind="stable")].tolist())
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def load_embeddings(path, ids: list[str]) -> np.ndarray:
    """Rows of an embeddings cache (.npz with `ids` and `features`) for these ids, in this order."""
    with np.load(path, allow_pickle=False) as z:
        row_of = {str(i): r for r, i in enumerate(z["ids"])}
        features = z["features"]
    missing = [i for i in ids if i not in row_of]
    if missing:
        raise ValueError(f"{path}: no embeddings for {len(missing)} ids, e.g. {missing[:3]}")
    return features[[row_of[i] for i in ids]]


# --- Fitting a prompt into the model's context -------------------------------------------------------------------

@dataclass
class FittedPrompt:
    text: str
    n_demonstrations: int   # how many of the selected demonstrations fit
    tokens: int
    query_truncated: bool   # even with no demonstration the input had to be cut


def fit_prompt(template: Template | ChatPrompt, text: str, demonstrations: list[tuple[str, str]],
               count_tokens: Callable[[str], int], limit: int) -> FittedPrompt:
    """The prompt with as many demonstrations as fit in `limit` tokens, dropping them from the front (the
    least similar, for `similar`); if the bare query is still too long, its text is cut to the words that fit."""
    for start in range(len(demonstrations) + 1):
        prompt = template.render(text, demonstrations[start:])
        n = count_tokens(prompt)
        if n <= limit:
            return FittedPrompt(prompt, len(demonstrations) - start, n, False)
    words = text.split()
    lo, hi = 0, len(words)   # invariant: words[:lo] fits (checked below for lo = 0), words[:hi + 1] does not
    if count_tokens(template.render("")) > limit:
        raise ValueError(f"the prompt template alone is longer than {limit} tokens")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(template.render(" ".join(words[:mid]))) <= limit:
            lo = mid
        else:
            hi = mid - 1
    prompt = template.render(" ".join(words[:lo]))
    return FittedPrompt(prompt, 0, count_tokens(prompt), True)
