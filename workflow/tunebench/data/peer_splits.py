"""Published FPB test sets, reproduced exactly, so our numbers can be set beside published ones on the same rows.

Each function returns a boolean mask of the test rows over the table (the FPB file's rows, in file order). The
caller carves dev from the rest (the protocol's train), so tuning never sees the protocol's test rows.
FinBen / PIXIU's flare-fpb test is not here: it cannot be rebuilt from the release files (data/README.md says why).
"""

from __future__ import annotations

import random

import numpy as np
import polars as pl

from tunebench.data.errors import DataError
from tunebench.data.loaders import raw_files

# FinGPT: AI4Finance-Foundation/FinGPT, fingpt/FinGPT_Benchmark/benchmarks/fpb.py
# (commit 52b1ed1c7a69d8e8f222c4ffbaa74e9b65f62136), lines 56-58, in test_fpb:
#     instructions = load_from_disk(... "data/financial_phrasebank-sentences_50agree/")
#     instructions = instructions["train"]
#     instructions = instructions.train_test_split(seed = 42)['test']
# The saved dataset is the Hub's financial_phrasebank, config sentences_50agree: the 4846 lines of
# Sentences_50Agree.txt in file order. `datasets` takes test_size=0.25 when neither size is given.
FINGPT_ROWS = 4846
FINGPT_TEST_SIZE = 0.25
FINGPT_SEED = 42

# HELM: stanford-crfm/helm, src/helm/benchmark/scenarios/financial_phrasebank_scenario.py
# (commit 0c34452a6d9fb9d308db8827ef15bd3ee5867d5f): TRAIN_SPLIT_SIZE = 0.7 (line 52), random_seed = 121
# (line 54), and in get_instances (lines 81-84, 91):
#     with open(data_file_path, mode="r", encoding="iso-8859-1") as f:
#         lines = list(f.readlines())
#         random.Random(self.random_seed).shuffle(lines)
#     train_split_index = int(len(lines) * self.TRAIN_SPLIT_SIZE)
#     ...split=TRAIN_SPLIT if index < train_split_index else TEST_SPLIT
# on the file of the requested agreement level (the run spec's default, in run_specs/enterprise_run_specs.py,
# is agreement=50).
HELM_TRAIN_SIZE = 0.7
HELM_SEED = 121


def fingpt_test_rows(table: pl.DataFrame, ds: dict, where: str) -> np.ndarray:
    """FinGPT's FPB benchmark test set: 25% of the 50agree rows, by `datasets`' own train_test_split."""
    import datasets  # only for this split: the others need no Hugging Face import

    _require_fpb(ds, where)
    if ds["agreement"] != "50agree" or table.height != FINGPT_ROWS:
        raise DataError(f"{where}: FinGPT's split is defined on the {FINGPT_ROWS} rows of the 50agree file "
                        f"(config agreement: 50agree); this table has {table.height} rows of {ds['agreement']}")
    # The permutation depends only on the number of rows and the seed, so a dataset of row numbers in file
    # order gives exactly the rows FinGPT tests on.
    rows = datasets.Dataset.from_dict({"row": np.arange(table.height)})
    test = rows.train_test_split(test_size=FINGPT_TEST_SIZE, seed=FINGPT_SEED)["test"]["row"]
    mask = np.zeros(table.height, dtype=bool)
    mask[np.asarray(test)] = True
    return mask


def helm_test_rows(table: pl.DataFrame, ds: dict, where: str) -> np.ndarray:
    """HELM's financial_phrasebank test set: the last 30% of the file's lines after random.Random(121).shuffle."""
    _require_fpb(ds, where)
    path = raw_files(ds)[0]
    with open(path, encoding="iso-8859-1") as f:   # read as HELM reads it, to count the lines it shuffles
        n_lines = len(f.readlines())
    if n_lines != table.height:
        raise DataError(f"{where}: HELM shuffles the {n_lines} lines of {path}, but the table has {table.height} "
                        f"rows (blank lines?), so its split cannot be mapped onto the rows")
    # shuffle() draws the same swaps for any list of this length, so shuffling line numbers shows where each
    # line went.
    order = list(range(n_lines))
    random.Random(HELM_SEED).shuffle(order)
    test_lines = order[int(n_lines * HELM_TRAIN_SIZE):]
    return np.isin(table["source_line"].to_numpy() - 1, test_lines)


def _require_fpb(ds: dict, where: str) -> None:
    if ds["loader"] != "fpb":
        raise DataError(f"{where}: this published split is defined on Financial PhraseBank; use loader fpb")


PEER_SPLITS = {"fingpt": fingpt_test_rows, "helm": helm_test_rows}
