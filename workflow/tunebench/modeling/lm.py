"""Generative language models answering prompts: label scoring and greedy generation, batched, in one pass.

Label scoring gives each answer its log-likelihood given the prompt, summed over the answer's tokens and divided
by their number (length-normalised), so a label that happens to take three tokens is not penalised against one
that takes one; the prediction is the argmax and nothing is unparseable. Generation is greedy and stops at the
end-of-sequence token; its text is read by tunebench.evaluation.answers.

Causal models: the prompts' longest common prefix (the instruction and, with demonstrations shared by the whole
test set, every demonstration) runs once; its key/value cache is shared by every batch, so each prompt costs
only its own tokens. Prompts may come in groups (`groups`: a group id per prompt), each with a prefix of its own:
a text with demonstrations drawn for it alone and the content-free inputs calibration renders with the same
demonstrations run that prefix once. From the prompt's last position the answers are scored (multi-token answers continue the
cache and are cropped off again) and generation continues the same cache. Seq2seq models encode each prompt
once and decode every answer against that encoder output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tunebench import progress


@dataclass
class Answers:
    """What `answer_prompts` returns. loglik / loglik_mean: (prompts, answers) log-likelihoods, summed and per
    token (None if no answers were scored); generated: the greedy answers (None if none were asked for)."""

    loglik: np.ndarray | None
    loglik_mean: np.ndarray | None
    generated: list[str] | None
    shared_prefix_tokens: int
    prompt_tokens: int        # tokens run through the model (the shared prefix once)


def inference_autocast(precision: str):
    """bf16 autocast for inference where `precision` resolved to bf16 (the weights stay fp32)."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def is_seq2seq(model) -> bool:
    return bool(model.config.is_encoder_decoder)


def continuation_ids(tokenizer, prompt: str, continuation: str, add_special_tokens: bool) -> list[int]:
    """Tokens of `continuation` as it follows `prompt`, tokenised jointly so that a word-start marker lands where
    it would in the full text (" positive" after "Answer:" is one token in most BPE vocabularies)."""
    head = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    full = tokenizer(prompt + continuation, add_special_tokens=add_special_tokens)["input_ids"]
    if full[:len(head)] == head and len(full) > len(head):
        return full[len(head):]
    return tokenizer(continuation, add_special_tokens=False)["input_ids"]


def _order(lengths, batch_size: int, report: bool = True):
    """Index batches of similar length, so little of each batch is padding."""
    order = np.argsort(lengths, kind="stable")
    starts = range(0, len(order), batch_size)
    # A long prompting pass logs "prompt batch i/n, elapsed, ETA" every 30 s to the job's log.
    for start in progress.report(starts, "prompt batch") if report else starts:
        yield order[start:start + batch_size]


def _common_prefix(sequences: list[list[int]]) -> list[int]:
    first = sequences[0]
    n = min(len(s) for s in sequences) - 1          # every prompt keeps at least one token of its own
    for s in sequences[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return first[:max(n, 0)]


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over positions of log p(target) where the target is not -100, and the number of such positions;
    logits[:, t] predicts targets[:, t]."""
    lp = torch.log_softmax(logits.float(), -1)
    keep = targets != -100
    picked = lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(-1), keep.sum(-1)


@torch.inference_mode()
def answer_prompts(model, tokenizer, prompts: list[str], answers: list[list[int]] | None = None,
                   max_new_tokens: int = 0, batch_size: int = 16, add_special_tokens: bool = True,
                   groups: list | None = None) -> Answers:
    """Score `answers` (token ids, the same for every prompt) and/or generate up to `max_new_tokens` greedily.

    For a causal model, `answers` are the tokens that continue the prompt (continuation_ids); for a seq2seq
    model they are decoder targets (the tokenizer's `text_target` ids, ending in </s>). groups: a group id per
    prompt (default: one group); a causal model runs each group's common prefix once.
    """
    if is_seq2seq(model):
        return _answer_seq2seq(model, tokenizer, prompts, answers, max_new_tokens, batch_size)
    return _answer_causal(model, tokenizer, prompts, answers, max_new_tokens, batch_size, add_special_tokens,
                          groups)


# --- causal models: shared prefix, scoring and generation from one cache -----------------------------------------

def _cache_argument(model) -> str:
    """transformers 5.2x renamed `past_key_values` to `cache` (the old name still works, with a warning)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _output_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _expanded_cache(prefix_kv, batch: int):
    """A fresh cache holding the shared prefix for `batch` rows (views: the first update allocates)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                                        for k, v in prefix_kv])


def _answer_causal(model, tokenizer, prompts, answers, max_new_tokens, batch_size, add_special_tokens,
                   groups=None) -> Answers:
    ids = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    group_of = np.zeros(len(ids), dtype=int) if groups is None else np.asarray(groups)
    members = [np.flatnonzero(group_of == g) for g in dict.fromkeys(group_of.tolist())]
    n_answers = len(answers) if answers else 0
    loglik = np.zeros((len(prompts), n_answers))
    counts = np.array([len(a) for a in answers or []], dtype=float)
    generated = [""] * len(prompts) if max_new_tokens else None
    stop = set(_stop_ids(tokenizer))
    shared = run = 0
    # One group: the progress line counts its batches; many small groups: it counts the groups.
    for group in progress.report(members, "prompt group") if len(members) > 1 else members:
        group_ids = [ids[i] for i in group]
        prefix = _common_prefix(group_ids) if len(group_ids) > 1 else []
        prefix_kv = _prefix_cache(model, prefix)
        P = len(prefix)
        shared, run = shared + P, run + P + sum(len(x) - P for x in group_ids)
        for batch in _order([len(x) for x in group_ids], batch_size, report=len(members) == 1):
            idx = group[batch]
            cache, first, mask, last = _run_suffixes(model, [ids[i][P:] for i in idx], P, prefix_kv,
                                                     tokenizer.pad_token_id)
            for j, answer in enumerate(answers or []):
                loglik[idx, j] = _continue_answer(model, cache, first, answer, mask, last).cpu().numpy()
            if max_new_tokens:
                texts = _greedy(model, tokenizer, cache, first, mask, last, max_new_tokens, stop)
                for i, text in zip(idx, texts):
                    generated[i] = text
    return Answers(loglik if answers else None, loglik / counts if answers else None, generated, shared, run)


def _prefix_cache(model, prefix: list[int]):
    """The key/value cache of a shared prefix (None without one)."""
    if not prefix:
        return None
    out = model(input_ids=torch.tensor([prefix], device=model.device), use_cache=True, logits_to_keep=1)
    return [(layer[0], layer[1]) for layer in _output_cache(out)]


def _run_suffixes(model, suffixes: list[list[int]], P: int, prefix_kv, pad: int):
    """Run a batch of prompt suffixes (left-padded) after the shared prefix of length P; returns the cache, the
    log-probabilities at each prompt's last position, the attention mask and those positions."""
    from transformers import DynamicCache

    dev = model.device
    B, width = len(suffixes), max(len(s) for s in suffixes)
    tokens = torch.tensor([[pad] * (width - len(s)) + s for s in suffixes], device=dev)
    own = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=dev)
    mask = torch.cat([torch.ones(B, P, dtype=own.dtype, device=dev), own], 1)
    positions = P + (own.cumsum(-1) - 1).clamp(min=0)
    cache = _expanded_cache(prefix_kv, B) if prefix_kv else DynamicCache(config=model.config)
    out = model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1, **{_cache_argument(model): cache})
    return cache, torch.log_softmax(out.logits[:, -1].float(), -1), mask, positions[:, -1]


def _continue_answer(model, cache, first_logprobs, answer: list[int], mask, last) -> torch.Tensor:
    """log p(answer | prompt) for every row: the first token from the prompt's last position, the rest by
    running the answer through the cache (then cropped back, so the cache again ends at the prompt)."""
    total = first_logprobs[:, answer[0]].clone()
    if len(answer) > 1:
        B, dev = first_logprobs.shape[0], first_logprobs.device
        rest = torch.tensor([answer[:-1]] * B, device=dev)
        step_mask = torch.cat([mask, torch.ones(B, len(answer) - 1, dtype=mask.dtype, device=dev)], 1)
        positions = last[:, None] + 1 + torch.arange(len(answer) - 1, device=dev)
        out = model(input_ids=rest, attention_mask=step_mask, position_ids=positions, use_cache=True,
                    **{_cache_argument(model): cache})
        lp = torch.log_softmax(out.logits.float(), -1)
        targets = torch.tensor(answer[1:], device=dev)
        total += lp.gather(-1, targets.expand(B, -1).unsqueeze(-1)).squeeze(-1).sum(-1)
        cache.crop(-(len(answer) - 1))
    return total


def _stop_ids(tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return [i for i in ids if i is not None]


def _greedy(model, tokenizer, cache, first_logprobs, mask, last, max_new_tokens: int, stop) -> list[str]:
    """Greedy decoding from the prompt's last position, continuing the cache; a row stops at end-of-sequence."""
    B, dev = first_logprobs.shape[0], first_logprobs.device
    stop_t = torch.tensor(sorted(stop), device=dev) if stop else torch.tensor([-1], device=dev)
    cache_arg = _cache_argument(model)
    token = first_logprobs.argmax(-1)
    done = torch.isin(token, stop_t)
    steps = [token]
    for step in range(1, max_new_tokens):
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=dev)], 1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=(last + step)[:, None],
                    use_cache=True, **{cache_arg: cache})
        token = torch.where(done, stop_t[0], out.logits[:, -1].argmax(-1))
        steps.append(token)
        done |= torch.isin(token, stop_t)
    rows = torch.stack(steps, 1).tolist()
    texts = []
    for row in rows:
        cut = next((i for i, t in enumerate(row) if t in stop), len(row))
        texts.append(_first_line(tokenizer.decode(row[:cut], skip_special_tokens=True)))
    return texts


def _first_line(text: str) -> str:
    """An answer ends where a new paragraph (the next demonstration) would begin."""
    return text.strip().split("\n\n")[0]


# --- seq2seq models ------------------------------------------------------------------------------------------------

def _answer_seq2seq(model, tokenizer, prompts, answers, max_new_tokens, batch_size) -> Answers:
    from transformers.modeling_outputs import BaseModelOutput

    dev = model.device
    n_answers = len(answers) if answers else 0
    loglik = np.zeros((len(prompts), n_answers))
    counts = np.zeros((len(prompts), n_answers))
    generated = [""] * len(prompts) if max_new_tokens else None
    if answers:
        longest = max(len(a) for a in answers)
        targets = torch.tensor([a + [-100] * (longest - len(a)) for a in answers], device=dev)
    total_tokens = 0
    for idx in _order([len(p) for p in prompts], batch_size):
        batch = [prompts[i] for i in idx]
        enc = tokenizer(batch, padding=True, return_tensors="pt", return_token_type_ids=False).to(dev)
        total_tokens += int(enc["attention_mask"].sum())
        hidden = model.get_encoder()(**enc).last_hidden_state               # each prompt is encoded once ...
        if answers:
            out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden.repeat_interleave(n_answers, 0)),
                        attention_mask=enc["attention_mask"].repeat_interleave(n_answers, 0),
                        labels=targets.repeat(len(batch), 1))               # ... every answer decoded against it
            lp, n = _token_logprobs(out.logits, targets.repeat(len(batch), 1))
            loglik[idx] = lp.view(len(batch), n_answers).cpu().numpy()
            counts[idx] = n.view(len(batch), n_answers).cpu().numpy()
        if max_new_tokens:
            out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                                 attention_mask=enc["attention_mask"], max_new_tokens=max_new_tokens,
                                 do_sample=False, num_beams=1)
            for i, text in zip(idx, tokenizer.batch_decode(out, skip_special_tokens=True)):
                generated[i] = _first_line(text)
    return Answers(loglik if answers else None, loglik / np.maximum(counts, 1) if answers else None, generated, 0,
                   total_tokens)


def seq2seq_answer_ids(tokenizer, answer: str) -> list[int]:
    """Decoder targets of an answer: its tokens and </s>."""
    return tokenizer(text_target=answer)["input_ids"]


def answer_token_ids(tokenizer, fmt, kind: str, words: dict | None) -> list[list[int]] | None:
    """Token ids of each label word as the model would write it after the prompt `fmt` renders."""
    if not words:
        return None
    if kind == "seq2seq":
        return [seq2seq_answer_ids(tokenizer, w) for w in words.values()]
    reference = fmt.render("A reference text.")
    return [continuation_ids(tokenizer, reference, fmt.continuation(w), fmt.add_special_tokens)
            for w in words.values()]
