"""Generative language models through transformers: loading, batched label scoring, and generation.

Seq2seq (T5 family) and causal (decoder-only) models load from a hub id, a local folder or `package:NAME`,
safetensors only, with remote code only when the model's config entry sets `trust_remote_code`.

Label scoring gives each answer word its log-likelihood given the prompt and takes the argmax, so no answer is
unparseable. It costs one prompt pass per example whatever the number of labels: a seq2seq model encodes the
prompt once and decodes every answer against that encoder output; a causal model runs the prompt once and
continues it from the key/value cache for each answer (models without such a cache are scored in plain batches).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
import torch.nn.functional as F

from tunebench.modeling.loading import resolve_path


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype() -> torch.dtype:
    """bf16 on GPUs that have it (A100, H100); fp32 elsewhere (fp16 overflows in T5)."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def load_tokenizer(model_cfg: dict):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(model_cfg["path"]), **_hub_kwargs(model_cfg))
    if model_cfg["kind"] == "causal":
        tokenizer.padding_side = "left"   # prompts end where the answer starts
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_cfg: dict, quantization_config=None, dtype: torch.dtype | None = None):
    """The model in eval mode on the default device (a quantised model is placed by bitsandbytes)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = {"seq2seq": AutoModelForSeq2SeqLM, "causal": AutoModelForCausalLM}[model_cfg["kind"]]
    kwargs = _hub_kwargs(model_cfg)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
    model = auto.from_pretrained(resolve_path(model_cfg["path"]), use_safetensors=True,
                                 dtype=dtype or default_dtype(), **kwargs)
    if quantization_config is None:
        model = model.to(device())
    return model.eval()


def _hub_kwargs(model_cfg: dict) -> dict:
    kwargs = {"trust_remote_code": bool(model_cfg.get("trust_remote_code", False))}
    if model_cfg.get("revision"):
        kwargs["revision"] = model_cfg["revision"]
    return kwargs


def token_counter(tokenizer):
    """Tokens of a prompt as the model will see it (special tokens included)."""
    return lambda text: len(tokenizer(text, add_special_tokens=True)["input_ids"])


def is_seq2seq(model) -> bool:
    return bool(model.config.is_encoder_decoder)


def _batches(prompts: list[str], batch_size: int):
    """Index batches of similar length, so little of each batch is padding."""
    order = np.argsort([len(p) for p in prompts], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _encode(tokenizer, texts: list[str], dev, max_length: int | None):
    enc = tokenizer(texts, padding=True, truncation=max_length is not None, max_length=max_length,
                    return_tensors="pt", return_token_type_ids=False)
    return {k: v.to(dev) for k, v in enc.items()}


# --- Label scoring ---------------------------------------------------------------------------------------------

@torch.inference_mode()
def score_labels(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 16,
                 max_length: int | None = None, use_cache: bool | None = None) -> np.ndarray:
    """Log-likelihood of each answer given each prompt: an array (len(prompts), len(answers)).

    use_cache (causal models): continue each prompt from its key/value cache (default where the model has a
    cache) or score every prompt+answer sequence in one plain batch.
    """
    scores = np.zeros((len(prompts), len(answers)), dtype=np.float64)
    if is_seq2seq(model):
        score_batch = _seq2seq_scorer(model, tokenizer, answers, max_length)
    else:
        cached = not getattr(model, "_is_stateful", False) if use_cache is None else use_cache
        score_batch = _causal_scorer(model, tokenizer, answers, max_length, cached)
    for idx in _batches(prompts, batch_size):
        scores[idx] = score_batch([prompts[i] for i in idx])
    return scores


def _seq2seq_scorer(model, tokenizer, answers, max_length):
    from transformers.modeling_outputs import BaseModelOutput

    dev = model.device
    targets = tokenizer(text_target=answers, padding=True, return_tensors="pt")["input_ids"].to(dev)
    targets = targets.masked_fill(targets == tokenizer.pad_token_id, -100)   # answers end with </s>
    n_answers = len(answers)

    def score_batch(batch):
        enc = _encode(tokenizer, batch, dev, max_length)
        hidden = model.get_encoder()(**enc).last_hidden_state          # the prompt is encoded once ...
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden.repeat_interleave(n_answers, 0)),
                    attention_mask=enc["attention_mask"].repeat_interleave(n_answers, 0),
                    labels=targets.repeat(len(batch), 1))              # ... and every answer decoded against it
        lp = _token_logprobs(out.logits, targets.repeat(len(batch), 1))
        return lp.view(len(batch), n_answers).cpu().numpy()

    return score_batch


def _causal_scorer(model, tokenizer, answers, max_length, cached: bool):
    dev = model.device
    answer_ids = [continuation_ids(tokenizer, a) for a in answers]
    n_answers = len(answers)
    longest = max(len(a) for a in answer_ids)
    pad = tokenizer.pad_token_id
    # Row j: answer j's tokens, right-padded; -100 marks padding in the targets.
    tokens = torch.tensor([a + [pad] * (longest - len(a)) for a in answer_ids], device=dev)
    targets = torch.tensor([a + [-100] * (longest - len(a)) for a in answer_ids], device=dev)
    answer_mask = (targets != -100).long()
    # transformers 5.2x renamed the `past_key_values` argument and output to `cache`.
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def score_with_cache(batch):
        enc = _encode(tokenizer, batch, dev, max_length)
        mask = enc["attention_mask"]
        out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=_positions(mask), use_cache=True)
        first = torch.log_softmax(out.logits[:, -1].float(), -1)                    # (B, vocab)
        scores = first[:, targets[:, 0]]                                             # (B, answers)
        if longest > 1:
            cache = out[cache_name]
            cache.batch_repeat_interleave(n_answers)                                 # row b * A + j
            cont_mask = answer_mask[:, :-1].repeat(len(batch), 1)
            start = mask.sum(-1).repeat_interleave(n_answers)[:, None]
            cont = model(input_ids=tokens[:, :-1].repeat(len(batch), 1),
                         attention_mask=torch.cat([mask.repeat_interleave(n_answers, 0), cont_mask], 1),
                         position_ids=start + torch.arange(longest - 1, device=dev), **{cache_name: cache})
            rest = _token_logprobs(cont.logits, targets[:, 1:].repeat(len(batch), 1))
            scores = scores + rest.view(len(batch), n_answers)
        return scores.cpu().numpy()

    def score_plain(batch):
        prompt_ids = tokenizer(batch, add_special_tokens=True, truncation=max_length is not None,
                               max_length=max_length)["input_ids"]
        seqs = [p + a for p in prompt_ids for a in answer_ids]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=dev)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=dev)
        labels = torch.full_like(ids, -100)
        for row, a in enumerate(answer_ids * len(batch)):
            labels[row, width - len(a):] = torch.tensor(a, device=dev)
        out = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask))
        lp = _token_logprobs(out.logits[:, :-1], labels[:, 1:])
        return lp.view(len(batch), n_answers).cpu().numpy()

    return score_with_cache if cached else score_plain


def continuation_ids(tokenizer, answer: str) -> list[int]:
    """Token ids of " answer" as it continues a prompt ending in "Answer:" (tokenised jointly, so a
    SentencePiece word-start marker lands where it would in the full text)."""
    anchor = tokenizer("Answer:", add_special_tokens=False)["input_ids"]
    full = tokenizer("Answer: " + answer, add_special_tokens=False)["input_ids"]
    if full[:len(anchor)] == anchor and len(full) > len(anchor):
        return full[len(anchor):]
    return tokenizer(" " + answer, add_special_tokens=False)["input_ids"]


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids under left padding: real tokens count from 0."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over positions of log p(target) where the target is not -100; logits[:, t] predicts targets[:, t]."""
    lp = torch.log_softmax(logits.float(), -1)
    picked = lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != -100)).sum(-1)


def probabilities(log_likelihoods: np.ndarray) -> np.ndarray:
    """Softmax over the answers: the model's distribution restricted to the label words."""
    z = log_likelihoods - log_likelihoods.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


# --- Generation ------------------------------------------------------------------------------------------------

@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 8, batch_size: int = 16,
             max_length: int | None = None) -> list[str]:
    """Greedy answers, batched. A causal model's answer ends at the first blank line, where it would start
    writing the next demonstration."""
    answers = [""] * len(prompts)
    for idx in _batches(prompts, batch_size):
        enc = _encode(tokenizer, [prompts[i] for i in idx], model.device, max_length)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=tokenizer.pad_token_id)
        if not is_seq2seq(model):
            out = out[:, enc["input_ids"].shape[1]:]
        for i, text in zip(idx, tokenizer.batch_decode(out, skip_special_tokens=True)):
            answers[i] = text.strip().split("\n\n")[0]
    return answers


def naive_generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 8,
                   max_length: int | None = None) -> list[str]:
    """Benchmark hook: free generation one prompt at a time, no batching — the naive way label scoring is
    compared against (bench: batched `score_labels` vs this, at k = 0 and k = 10)."""
    return [generate(model, tokenizer, [p], max_new_tokens, 1, max_length)[0] for p in prompts]
