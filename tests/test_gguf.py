"""The GGUF loading path of transformers (`from_pretrained(folder, gguf_file=name)`) on a tiny Llama written as a
GGUF file: the model and tokenizer it loads equal the reference they were written from, chat templating and
greedy generation work, and quantised files dequantise close to the reference."""

from __future__ import annotations

import pytest
import torch
from tiny_models import build_tiny_gguf, tiny_chat_llama

TEXTS = [
    "profits surge as sales rise strongly",
    "Shares PLUNGE after the company warns on losses!",
    "answer: -0.25 0.50 1.00 and 12345",
    "unseen wörds, émojis 🙂 and  two  spaces",
    "<|im_start|>user\nrate the sentiment<|im_end|>\n<|im_start|>assistant\n",
]
CHAT = [{"role": "user", "content": "classify: profits surge"}]


def load(path, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.fixture(scope="module")
def reference():
    model, tokenizer = tiny_chat_llama()
    return model, tokenizer


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf")


def logits(model, tokenizer, texts=TEXTS):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits, batch["attention_mask"].bool()


def test_loads_through_the_gguf_path(gguf_path, reference):
    from transformers import LlamaForCausalLM

    ref_model, ref_tok = reference
    (model, info), tokenizer = load(gguf_path, output_loading_info=True)
    assert isinstance(model, LlamaForCausalLM)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    config, ref = model.config, ref_model.config
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings",
                "bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(config, key) == getattr(ref, key), key
    assert config.rope_parameters["rope_theta"] == ref.rope_parameters["rope_theta"] == 100000.0
    assert config.rms_norm_eps == pytest.approx(ref.rms_norm_eps)   # stored as float32 in the file
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # no output.weight: tied
    assert len(tokenizer) == len(ref_tok) == config.vocab_size
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")


@pytest.mark.parametrize("tie", [True, False])
def test_weights_and_logits_equal_the_reference(tie, tmp_path, reference):
    """F32 round trip: every tensor comes back exactly, so q/k were un-permuted the way they were permuted."""
    ref_model, ref_tok = reference if tie else tiny_chat_llama(tie_embeddings=False)
    model, tokenizer = load(build_tiny_gguf(tmp_path / "tiny.gguf", tie_embeddings=tie))
    assert model.config.tie_word_embeddings is tie
    state, ref_state = model.state_dict(), ref_model.state_dict()
    assert state.keys() == ref_state.keys()
    for name, tensor in ref_state.items():
        assert torch.equal(state[name], tensor), name
    got, mask = logits(model, tokenizer)
    want, _ = logits(ref_model, ref_tok)
    assert torch.allclose(got[mask], want[mask], atol=1e-5)


def test_unpermuted_file_would_differ(tmp_path, reference, monkeypatch):
    """The comparison above is not vacuous: a file written without llama.cpp's q/k permutation loads wrong."""
    import tiny_models

    monkeypatch.setattr(tiny_models, "permute_for_gguf", lambda weight, n_head: weight)
    model, tokenizer = load(build_tiny_gguf(tmp_path / "unpermuted.gguf"))
    got, mask = logits(model, tokenizer)
    want, _ = logits(*reference)
    assert (got[mask] - want[mask]).abs().mean() > 0.1


def test_tokenizer_equals_the_reference(gguf_path, reference):
    _, ref_tok = reference
    _, tokenizer = load(gguf_path)
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert ids == ref_tok(text)["input_ids"], text
        assert tokenizer.decode(ids) == ref_tok.decode(ids) == text   # byte-level: lossless, no BOS added
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):   # special tokens stay whole
        assert tokenizer(token)["input_ids"] == [ref_tok.convert_tokens_to_ids(token)]
    plain = tokenizer.decode(tokenizer(TEXTS[-1])["input_ids"], skip_special_tokens=True)
    assert plain == "user\nrate the sentiment\nassistant\n"


def test_chat_template_renders_chatml(gguf_path, reference):
    _, ref_tok = reference
    _, tokenizer = load(gguf_path)
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nclassify: profits surge<|im_end|>\n<|im_start|>assistant\n")
    with_system = [{"role": "system", "content": "Be brief."}, *CHAT, {"role": "assistant", "content": "positive"}]
    assert tokenizer.apply_chat_template(with_system, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nclassify: profits surge<|im_end|>\n"
        "<|im_start|>assistant\npositive<|im_end|>\n")
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids == ref_tok.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_greedy_generate_equals_the_reference(gguf_path, reference):
    ref_model, _ = reference
    model, tokenizer = load(gguf_path)
    prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    assert torch.equal(out, ref_model.generate(**prompt, max_new_tokens=8, do_sample=False))
    assert isinstance(tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True), str)


@pytest.mark.parametrize("quantize, max_rel_error", [("Q8_0", 0.01), ("Q4_0", 0.15)])
def test_quantized_file_dequantises_close_to_the_reference(quantize, max_rel_error, tmp_path, reference):
    from gguf import GGUFReader

    ref_model, ref_tok = reference
    path = build_tiny_gguf(tmp_path / f"tiny-{quantize}.gguf", quantize=quantize)
    types = {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(path).tensors}
    assert types["token_embd.weight"] == types["blk.0.attn_q.weight"] == types["blk.1.ffn_down.weight"] == quantize
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == "F32"   # 1-D tensors stay F32
    model, tokenizer = load(path)
    assert model.model.embed_tokens.weight.dtype == torch.float32
    state = model.state_dict()
    for name, tensor in ref_model.state_dict().items():
        # a q/k permutation mistake would give a relative error near 1.4
        assert (state[name] - tensor).norm() / tensor.norm() < max_rel_error, name
    if quantize == "Q8_0":   # 4-bit rounding of a 64-wide model moves the logits too much for a useful bound
        got, mask = logits(model, tokenizer)
        want, _ = logits(ref_model, ref_tok)
        assert torch.allclose(got[mask], want[mask], atol=0.3)
