"""Rule `tokenize`: prepared table → unpadded token ids as Arrow shards (one DatasetDict split per split).

Padding happens per batch at training time (DataCollatorWithPadding), so no compute is spent on padding here
or later. Length statistics land beside the shards.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from tunebench import files
from tunebench.modeling.loading import load_tokenizer

SHARDS_PER_SPLIT = {"train": 4, "dev": 1, "test": 1}


def tokenize_table(table_path, model_cfg: dict, out_dir, threads: int = 1):
    from datasets import Dataset, DatasetDict

    table = pl.read_parquet(table_path)
    tokenizer = load_tokenizer(model_cfg)
    max_length = model_cfg["max_length"]

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    parts = {}
    for split in ("train", "dev", "test"):
        rows = table.filter(pl.col("split") == split).drop("split", "source_line", "group", strict=False)
        ds = Dataset.from_polars(rows)
        parts[split] = ds.map(encode, batched=True, batch_size=1000, desc=f"tokenize {split}")
    dataset = DatasetDict(parts)
    with files.atomic_dir(out_dir) as tmp:
        dataset.save_to_disk(str(tmp), num_shards={s: min(n, max(1, len(dataset[s]))) for s, n in
                                                   SHARDS_PER_SPLIT.items()})
        (tmp / "lengths.json").write_text(json.dumps(length_stats(dataset, max_length), indent=2))
    return dataset


def length_stats(dataset, max_length: int) -> dict:
    stats = {}
    for split, ds in dataset.items():
        lengths = np.asarray(ds["length"])
        stats[split] = {
            "rows": int(len(lengths)),
            "tokens": int(lengths.sum()),
            "mean": float(lengths.mean()),
            "p50": float(np.percentile(lengths, 50)),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
            "truncated_fraction": float(np.mean(lengths >= max_length)),
        }
    return stats


def load_tokenized(path):
    from datasets import load_from_disk

    return load_from_disk(str(path))
