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
