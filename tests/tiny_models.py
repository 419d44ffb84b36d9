"""Tiny models built in code, with tokenizers trained on the fly, so every code path runs in seconds offline."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CORPUS = [
    "profits surge as sales rise strongly",
    "shares plunge after the company warns on losses",
    "the company reported results in line with expectations",
    "revenue fell and the outlook is weak",
    "operating profit rose to a record level",
    "the board will meet on tuesday",
]


def train_wordpiece_tokenizer(corpus, vocab_size: int = 400):
    """A BERT-style WordPiece tokenizer trained on `corpus`, wrapped for transformers."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(list(corpus), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def build_tiny_bert(path, corpus=DEFAULT_CORPUS, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """A 2-layer BERT saved with its tokenizer as safetensors: loads like any local checkpoint.

    hidden 64 is the smallest width whose 4-bit weights bitsandbytes packs on CPU (32 fails in its CPU kernel).
    """
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    tokenizer = train_wordpiece_tokenizer(corpus)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128)
    BertModel(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path



def build_tiny_distilbert(path, corpus=DEFAULT_CORPUS, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """A 2-layer DistilBERT (attention q_lin/k_lin/v_lin/out_lin, no token types) saved like build_tiny_bert."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    path = Path(path)
    tokenizer = train_wordpiece_tokenizer(corpus)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]   # as DistilBERT's own tokenizer: no token types
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=hidden, n_layers=layers, n_heads=2, hidden_dim=2 * hidden,
                              max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    DistilBertModel(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path

# --- Generative models (seq2seq and causal) for the prompting and seq2seq fine-tuning tests ---------------------

def train_generative_tokenizer(corpus, bos: bool, vocab_size: int = 400):
    """A WordPiece tokenizer with T5/Llama-style special tokens: `</s>` ends every input (T5) or `<s>` starts it
    (Llama, bos=True). WordPiece keeps whole words, so label words are single tokens on a small corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    special = ["<pad>", "</s>", "<unk>", "<s>"]
    tok.train_from_iterator(list(corpus), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 3)])
    else:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")


def build_tiny_t5(path, corpus=DEFAULT_CORPUS, seed: int = 0) -> Path:
    """A T5 (d_model 64, 2 encoder + 2 decoder layers) saved with its tokenizer as safetensors."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    path = Path(path)
    tokenizer = train_generative_tokenizer(corpus, bos=False)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2,
                      num_decoder_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_llama(path, corpus=DEFAULT_CORPUS, seed: int = 0) -> Path:
    """A Llama (hidden 64, 2 layers) saved with its tokenizer as safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = train_generative_tokenizer(corpus, bos=True)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=1, bos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


# Words the prompt tests need as whole tokens: the default templates, the label words and a few numbers.
PROMPT_CORPUS = DEFAULT_CORPUS + [
    "classify the sentiment of the financial text as negative, neutral or positive.",
    "rate the sentiment of the financial text as a number from -1 (very negative) to 1 (very positive).",
    "text: answer: bearish bullish neutral negative positive",
    "answer: -0.25 0.50 0.75 -1.00 0.00 1.00",
]


def tiny_sentiment_rows(task: str = "classification", n_train: int = 24, n_dev: int = 6, n_test: int = 9):
    """A small labelled table (id, text, label or target, group, split) built from the corpus sentences."""
    base = [("profits surge as sales rise strongly", "positive", 0.8),
            ("operating profit rose to a record level", "positive", 0.6),
            ("shares plunge after the company warns on losses", "negative", -0.7),
            ("revenue fell and the outlook is weak", "negative", -0.5),
            ("the company reported results in line with expectations", "neutral", 0.05),
            ("the board will meet on tuesday", "neutral", -0.05)]
    rows = []
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        for i in range(n):
            text, label, target = base[i % len(base)]
            row = {"id": f"{split}{i}", "text": f"{text} {i}" if i % 2 else text, "group": f"{split}{i}",
                   "split": split}
            row.update({"label": label} if task == "classification" else {"target": target})
            rows.append(row)
    return rows


# --- A tiny chat Llama as a GGUF file, for the GGUF loading path of transformers ---------------------------------

# SmolLM2-Instruct's ChatML template: a default system turn when the conversation has none, one
# `<|im_start|>role\n...<|im_end|>\n` block per message, and `add_generation_prompt` opening the assistant turn.
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Ids 0, 1, 2 as in SmolLM2: unk, bos and eos (which is also pad) of the instruct model.
CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_chatml_tokenizer(corpus, chat_template: str = CHATML, vocab_size: int = 400):
    """A GPT-2-style byte-level BPE tokenizer (SmolLM2's kind) with the ChatML special tokens, trained on `corpus`.

    The pre-tokenizer is exactly the one transformers' GGUF loader rebuilds for `tokenizer.ggml.model = gpt2`
    (`ByteLevel(add_prefix_space=False)`, GPT-2 split regex), so the two tokenizers can be compared id for id.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=CHATML_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>", chat_template=chat_template)


def tiny_chat_llama(corpus=PROMPT_CORPUS, seed: int = 0, chat_template: str = CHATML, tie_embeddings: bool = True):
    """The reference `(LlamaForCausalLM, tokenizer)` that `build_tiny_gguf` writes: shaped like build_tiny_llama,
    with SmolLM2's rope theta, norm epsilon and tied embeddings (values that differ from LlamaConfig's defaults,
    so a key the GGUF loader failed to read would show in the logits).

    The weights are drawn with std 0.1 rather than LlamaConfig's 0.02, so attention is far from uniform and a
    q/k permutation mistake moves the logits by about as much as they vary (at 0.02 it moved them less than
    Q8_0 rounding does). The RMSNorm weights are drawn around 1 rather than left at 1: a norm the loader skipped
    would otherwise be re-initialised to exactly the reference's value. Same arguments, same model and tokenizer.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_chatml_tokenizer(corpus, chat_template)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie_embeddings,
                         initializer_range=0.1, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(0.1 * torch.randn_like(param))
    return model, tokenizer


# transformers' Llama parameter names -> llama.cpp's (gguf-py's tensor_mapping, MODEL_ARCH.LLAMA).
GGUF_LLAMA_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_tensor_name(hf_name: str) -> str:
    """`model.layers.1.self_attn.q_proj.weight` -> `blk.1.attn_q.weight`; `lm_head.weight` -> `output.weight`."""
    module, suffix = hf_name.rsplit(".", 1)
    if module.startswith("model.layers."):
        block, leaf = module[len("model.layers."):].split(".", 1)
        return f"blk.{block}.{GGUF_LLAMA_NAMES[leaf]}.{suffix}"
    return f"{GGUF_LLAMA_NAMES[module]}.{suffix}"


def permute_for_gguf(weight, n_head: int):
    """llama.cpp's `LlamaModel.permute`, applied to q_proj (n_head = heads) and k_proj (n_head = kv heads).

    HF's rotary embedding rotates the two halves of each head (`rotate_half`); ggml's rotates adjacent pairs.
    llama.cpp's converter interleaves the rows of each head to match, and transformers' GGUF loader undoes it
    (`LlamaTensorProcessor._reverse_permute_weights`), so an unpermuted file would load with scrambled q/k.
    """
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_llama_gguf(path, model, tokenizer, quantize: str = "F32") -> Path:
    """Write a LlamaForCausalLM and its byte-level BPE tokenizer as llama.cpp's `convert_hf_to_gguf.py` would.

    `quantize` is a GGML type gguf-py can quantize to with 32-wide blocks (F32, F16, Q8_0, Q4_0...); as in
    llama.cpp, only the 2-D weights are quantized, the norms stay F32. Tied embeddings get no `output.weight`:
    transformers reads its absence as `tie_word_embeddings=True`.
    """
    import json

    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = model.config
    qtype = gguf.GGMLQuantizationType[quantize]
    file_type = gguf.LlamaFileType.ALL_F32 if quantize == "F32" else gguf.LlamaFileType[f"MOSTLY_{quantize}"]

    writer = gguf.GGUFWriter(str(path), "llama")  # writes general.architecture
    # Not "mistral": transformers loads a llama file whose name contains it as a Mistral.
    writer.add_name("tunebench-tiny-llama")
    writer.add_file_type(file_type)
    if quantize not in ("F32", "F16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)  # transformers reads it as head_dim
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)

    # The tokenizer as llama.cpp stores a byte-level BPE: the byte-alphabet spellings in id order, the merges
    # as "left right" strings, and the added special tokens marked CONTROL, which transformers adds back as
    # special tokens (without that, `<|im_start|>` would be cut into bytes).
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {token.content for token in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()
               if token.special}
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in backend["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    # transformers splits text with GPT-2's regex for any `pre` outside its table (llama3, qwen2...): as trained.
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL
                            for token in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_add_bos_token(False)  # SmolLM2 adds no BOS: the chat template opens every turn itself
    writer.add_chat_template(tokenizer.chat_template)

    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        data = tensor.detach().float().numpy()
        if name.endswith("self_attn.q_proj.weight"):
            data = permute_for_gguf(data, config.num_attention_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            data = permute_for_gguf(data, config.num_key_value_heads)
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_tensor_name(name), np.ascontiguousarray(data, dtype=np.float32))
        else:
            writer.add_tensor(gguf_tensor_name(name), gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def build_tiny_gguf(path: Path, corpus=PROMPT_CORPUS, seed: int = 0, chat_template: str = CHATML,
                    quantize: str = "F32", tie_embeddings: bool = True) -> Path:
    """The tiny chat Llama of `tiny_chat_llama` (same arguments, same weights) written as one GGUF file at `path`.

    Load it with `from_pretrained(path.parent, gguf_file=path.name)`; compare with `tiny_chat_llama(...)`.
    """
    model, tokenizer = tiny_chat_llama(corpus, seed, chat_template, tie_embeddings)
    return write_llama_gguf(path, model, tokenizer, quantize)


class WordTokenizer:
    """Words → ids from a fixed vocabulary (for the constructed case)."""

    def __init__(self, words: list[str]):
        self.ids = {w: i for i, w in enumerate(words)}
        self.pad_token_id, self.eos_token_id = 0, None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [self.ids[w] for w in text.split()]}


def cacheless_output(logits, logits_to_keep: int, cache):
    """What a hand-built causal 'model' returns: its logits (the last `logits_to_keep` positions) and the cache it
    was given, untouched (it needs none)."""
    from transformers import DynamicCache

    return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits,
                            "cache": cache if cache is not None else DynamicCache()})()
