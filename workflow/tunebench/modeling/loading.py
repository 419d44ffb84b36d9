"""Loading pretrained models and their tokenizers — encoders and generative models alike — from a hub id, a
local folder, a model shipped in a Python package (`package:NAME`), or a GGUF checkpoint.

Safetensors only; remote code only where the model's config entry opts in (`trust_remote_code: true`).
A GGUF entry (`gguf_file`) is dequantised by transformers (it needs the `gguf` package); because that takes
seconds per load, the workflow converts it once (rule `import_model`, `convert_gguf` here) and runs load the
converted safetensors folder (`model_dir`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from tunebench import files
from tunebench.modeling.sources import ModelError, check_gguf, resolve_path

def _hub_kwargs(model_cfg: dict) -> dict:
    kwargs = {"trust_remote_code": bool(model_cfg.get("trust_remote_code", False))}
    if model_cfg.get("revision"):
        kwargs["revision"] = model_cfg["revision"]
    return kwargs


def _source(model_cfg: dict, model_dir=None) -> tuple[str, dict]:
    """(from_pretrained path, kwargs): the converted folder of a GGUF entry if there is one, else the entry."""
    if model_dir is not None:
        return str(model_dir), {}
    kwargs = _hub_kwargs(model_cfg)
    if model_cfg.get("gguf_file"):
        kwargs["gguf_file"] = model_cfg["gguf_file"]
    return resolve_path(model_cfg), kwargs


def attention(model_cfg: dict, training: bool = False) -> str:
    """The attention implementation to load the entry with (config key `attention`; unset = sdpa).

    `auto` picks by what the model is about to do, and where: eager while training on a CPU (bench (j), (l):
    faster for SmolLM2 LoRA, neutral for MiniLM), sdpa for inference (over a long shared-prefix KV cache eager
    is slower: bench (j)) and on a GPU (its fused kernels)."""
    choice = model_cfg.get("attention") or "sdpa"
    if choice == "auto":
        return "eager" if training and not torch.cuda.is_available() else "sdpa"
    return choice


def use_attention(model, implementation: str) -> None:
    """Switch a loaded model (or the base of a peft model) to another attention implementation in place; the
    weights are untouched."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base.config._attn_implementation != implementation:
        base.set_attn_implementation(implementation)


def load_tokenizer(model_cfg: dict, model_dir=None):
    """The model's tokenizer; causal models pad on the left (prompts end where the answer starts)."""
    from transformers import AutoTokenizer

    path, kwargs = _source(model_cfg, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if model_cfg["kind"] == "causal":
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _placement(quantization_config) -> dict:
    if quantization_config is None:
        return {}
    return {"quantization_config": quantization_config,
            "device_map": {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"}


def load_encoder(model_cfg: dict, quantization_config=None, model_dir=None, training: bool = False):
    """The bare encoder (AutoModel), optionally quantised with bitsandbytes; `training`: it is about to be trained
    (what `attention: auto` decides by)."""
    from transformers import AutoModel

    path, kwargs = _source(model_cfg, model_dir)
    return AutoModel.from_pretrained(path, use_safetensors=True, attn_implementation=attention(model_cfg, training),
                                     **kwargs, **_placement(quantization_config))


def load_generative(model_cfg: dict, quantization_config=None, dtype: torch.dtype = torch.float32,
                    model_dir=None, training: bool = False):
    """A seq2seq or causal LM in eval mode on the default device (a quantised model is placed by bitsandbytes).

    Weights load in fp32 by default: mixed precision comes from autocast, and fp16 overflows in T5."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = {"seq2seq": AutoModelForSeq2SeqLM, "causal": AutoModelForCausalLM}[model_cfg["kind"]]
    path, kwargs = _source(model_cfg, model_dir)
    if "gguf_file" not in kwargs:
        kwargs["use_safetensors"] = True
    model = auto.from_pretrained(path, dtype=dtype, attn_implementation=attention(model_cfg, training), **kwargs,
                                 **_placement(quantization_config))
    if quantization_config is None:
        model = model.to(device())
    return model.eval()


def convert_gguf(model_cfg: dict, out_dir, where: str = "model") -> dict:
    """Dequantise a GGUF checkpoint once into a safetensors folder (fp32 weights, tokenizer, chat template)
    and record the source file's sha256 beside it (source.json), checked against `sha256` if the entry pins it."""
    source = check_gguf(model_cfg, where)
    t0 = time.perf_counter()
    digest = files.sha256(source)
    expected = model_cfg.get("sha256")
    if expected and digest != expected:
        raise ModelError(f"{where}.sha256': {source} has sha256 {digest}, the config expects {expected} "
                         f"(a different or damaged file)")
    tokenizer = load_tokenizer(model_cfg)
    model = load_generative(model_cfg)
    # The dequantised weights are plain tensors; drop the GGUF marker so that they save as a normal checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    info = {"gguf_file": source.name, "package_path": str(source), "sha256": digest,
            "bytes": source.stat().st_size, "parameters": sum(p.numel() for p in model.parameters()),
            "architecture": model.config.model_type, "seconds": None}
    with files.atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info["seconds"] = time.perf_counter() - t0
        (Path(tmp) / "source.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def model_source(model_cfg: dict | None, model_dir=None) -> dict:
    """What a run records about its weights: the GGUF file's sha256 for a converted entry, else the path."""
    if model_cfg is None:
        return {}
    if model_dir is not None and (Path(model_dir) / "source.json").exists():
        return json.loads((Path(model_dir) / "source.json").read_text())
    return {"path": model_cfg.get("path"), "revision": model_cfg.get("revision")}


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str, pooler_output=None) -> torch.Tensor:
    """One vector per text: the masked mean of token states, or the model's pooler / [CLS] state."""
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return pooler_output if pooler_output is not None else hidden[:, 0]


class EncoderClassifier(nn.Module):
    """Encoder → pooling → dropout → linear head; cross-entropy for classes, MSE for a number (num_labels=1).

    A model-agnostic head, so that each model is pooled the way it was trained (mean pooling for
    sentence-transformers checkpoints, whose BertPooler was never trained) — AutoModelForSequenceClassification
    always uses the pooler.
    """

    def __init__(self, encoder: nn.Module, pooling: str, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        self.config = encoder.config  # the Trainer reads a few fields from here

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        pooled = pool(out.last_hidden_state, attention_mask, self.pooling, getattr(out, "pooler_output", None))
        logits = self.classifier(self.dropout(pooled.to(self.classifier.weight.dtype)))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = nn.functional.cross_entropy(logits.float(), labels.long())
        return {"loss": loss, "logits": logits} if loss is not None else {"logits": logits}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total). 4-bit weights are stored packed two to a byte: count their real element count.

    peft keeps a frozen copy of each module it trains in full (`original_module`): not part of the model used.
    """
    trainable = total = 0
    for name, p in model.named_parameters():
        if ".original_module." in name:
            continue
        quant_state = getattr(p, "quant_state", None)
        n = quant_state.shape.numel() if quant_state is not None else p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
