"""Figure (e): rule `tokenize` on the TFNS table — prepared table → unpadded token ids in Arrow shards.

The whole `tokenize_table` call is timed (tokenizer load, polars → datasets, batched fast tokenisation, writing
the shards and length statistics), best of REPEATS into fresh folders.
"""

from __future__ import annotations

import polars as pl

from .workloads import Context, split_rows, timed

REPEATS = 2
QUICK_ROWS = 600


def measure(ctx: Context) -> dict:
    from tunebench.modeling.tokenize import tokenize_table

    table = ctx.table("tfns")
    if ctx.quick:
        path = ctx.tmp / "data" / "tfns-quick.parquet"
        pl.read_parquet(table).sample(QUICK_ROWS, seed=0).write_parquet(path)
        table = path
    model_cfg = ctx.cfg["models"]["minilm"]   # the tokenizer alone is light: the real one even in quick mode
    rows = sum(split_rows(table).values())
    seconds = [timed(tokenize_table, table, model_cfg, ctx.tmp / "tokenized" / f"tfns-{i}", ctx.threads)[1]
               for i in range(REPEATS)]
    return {
        "workload": (f"TFNS table ({rows} sentences, all splits), {model_cfg['path'].removeprefix('package:')} "
                     f"tokenizer, max_length {model_cfg['max_length']}; whole tokenize_table call, best of "
                     f"{REPEATS}"),
        "values": {"tokenize_sentences_per_s": rows / min(seconds)},
        "raw": {"rows": rows, "seconds": seconds},
    }
