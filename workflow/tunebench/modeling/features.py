"""Rule `encode_features`: one pooled vector per text from a frozen encoder, computed once and cached.

Head-only training and the embedding few-shot methods read this cache instead of running the encoder every
epoch. The encoder runs in eval mode (no dropout), in length-sorted batches with dynamic padding.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tunebench import files, progress
from tunebench.modeling.loading import load_encoder, load_tokenizer, pool
from tunebench.modeling.tokenize import load_tokenized


@torch.inference_mode()
def encode_dataset(encoder, tokenizer, ds, pooling: str, batch_size: int = 128) -> np.ndarray:
    """Pooled features of a tokenised split, in the split's row order."""
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    columns = {c: ds[c] for c in ("input_ids", "attention_mask", "token_type_ids") if c in ds.column_names}
    order = np.argsort(np.asarray(ds["length"]), kind="stable")
    out = np.zeros((len(ds), encoder.config.hidden_size), dtype=np.float32)
    device = next(encoder.parameters()).device
    for start in progress.report(range(0, len(ds), batch_size), "encoding batch"):   # a line each 30 s
        idx = order[start:start + batch_size]
        batch = collate([{c: values[i] for c, values in columns.items()} for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        res = encoder(**batch)
        vec = pool(res.last_hidden_state, batch["attention_mask"], pooling, getattr(res, "pooler_output", None))
        out[idx] = vec.float().cpu().numpy()
    return out


def encode_features(shards_dir, model_cfg: dict, pooling: str, out_path, threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    dataset = load_tokenized(shards_dir)
    tokenizer = load_tokenizer(model_cfg)
    encoder = load_encoder(model_cfg).eval()
    if torch.cuda.is_available():
        encoder = encoder.cuda()
    t0 = time.perf_counter()
    ids, splits, feats = [], [], []
    for split, ds in dataset.items():
        feats.append(encode_dataset(encoder, tokenizer, ds, pooling))
        ids += list(ds["id"])
        splits += [split] * len(ds)
    seconds = time.perf_counter() - t0
    with files.atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.asarray(ids), splits=np.asarray(splits), features=np.concatenate(feats),
                     seconds=seconds, pooling=pooling,
                     encoder_params=sum(p.numel() for p in encoder.parameters()))
    print(f"encoded {len(ids)} texts in {seconds:.1f} s ({len(ids) / seconds:.0f}/s)")
    return {"rows": len(ids), "seconds": seconds}


def load_features(path) -> dict:
    """{'ids', 'splits', 'features', 'seconds', 'pooling'} from an encode_features cache."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
