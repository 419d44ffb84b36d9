"""What the figures run on: the repository's default config, prepared tables and their slices, the encoder.

Everything is built under one temporary folder per bench run with the package's own steps (prepare_dataset,
tokenize_table), so a figure measures the same code a study runs. Quick mode swaps the slices for tiny ones and
all-MiniLM-L6-v2 for a tiny BERT (tests/tiny_models.py): it only proves the bench code runs.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "tests"))   # tiny_models, for quick mode and the ICL figure

from tunebench import config as tbconfig  # noqa: E402
from tunebench.data.prepare import prepare_dataset  # noqa: E402
from tunebench.spec import RunSpec  # noqa: E402

# Rows of the FPB 50Agree slice shared by the fine-tuning and head figures (None = the whole split).
FPB_SLICE = {"train": 1024, "dev": None, "test": 128}
FPB_SLICE_QUICK = {"train": 32, "dev": 16, "test": 16}


def timed(fn, *args, **kwargs):
    """(fn's result, wall seconds)."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def split_rows(table_path) -> dict[str, int]:
    table = pl.read_parquet(table_path)
    return {split: table.filter(pl.col("split") == split).height for split in ("train", "dev", "test")}


@dataclass
class Context:
    quick: bool
    threads: int
    tmp: Path
    cfg: dict = field(init=False)
    _made: dict = field(init=False, default_factory=dict)

    def __post_init__(self):
        self.cfg = tbconfig.load(REPO / "config" / "config.yaml")

    def once(self, key, build):
        """Build a workload the first time a figure asks for it; later figures reuse it."""
        if key not in self._made:
            self._made[key] = build()
        return self._made[key]

    def table(self, dataset: str) -> Path:
        """The dataset's prepared table (rule `prepare`, on the default config's entry)."""
        def build():
            out = self.tmp / "data" / dataset
            prepare_dataset(self.cfg["datasets"][dataset], dataset, out / "table.parquet", out / "splits.csv",
                            out / "manifest.json")
            return out / "table.parquet"
        return self.once(("table", dataset), build)

    def fpb_slice(self) -> Path:
        """FPB 50Agree: a seeded sample of the training split, the dev split (or its head), the test head."""
        def build():
            sizes = FPB_SLICE_QUICK if self.quick else FPB_SLICE
            table = pl.read_parquet(self.table("fpb"))
            parts = []
            for split, n in sizes.items():
                rows = table.filter(pl.col("split") == split)
                if n is not None and n < rows.height:
                    rows = rows.sample(n, seed=0) if split == "train" else rows.head(n)
                parts.append(rows)
            path = self.tmp / "data" / "fpb-slice.parquet"
            pl.concat(parts).write_parquet(path)
            return path
        return self.once("fpb_slice", build)

    def encoder_cfg(self) -> dict:
        """The default study's encoder (all-MiniLM-L6-v2, max_length 64, mean pooling); in quick mode the same
        settings on a tiny BERT whose tokenizer is trained on the FPB slice."""
        def build():
            model_cfg = copy.deepcopy(self.cfg["models"]["minilm"])
            if self.quick:
                from tiny_models import build_tiny_bert

                texts = pl.read_parquet(self.fpb_slice())["text"].to_list()
                model_cfg["path"] = str(build_tiny_bert(self.tmp / "tiny_bert", corpus=texts))
            return model_cfg
        return self.once("encoder_cfg", build)

    def encoder_name(self) -> str:
        return "tiny BERT (tests/tiny_models.py)" if self.quick else self.encoder_cfg()["path"].removeprefix("package:")

    def fpb_shards(self) -> Path:
        """The FPB slice tokenised into Arrow shards (rule `tokenize`)."""
        def build():
            from tunebench.modeling.tokenize import tokenize_table

            out = self.tmp / "tokenized" / "fpb-slice"
            tokenize_table(self.fpb_slice(), self.encoder_cfg(), out, threads=self.threads)
            return out
        return self.once("fpb_shards", build)

    def encoder_spec(self, method: str, run_name: str, **method_overrides) -> RunSpec:
        """A RunSpec for a default-config encoder method on the FPB slice, as the Snakefile would build it.

        `min_steps` is switched off: on this small slice it would raise the epochs of one side of a comparison.
        """
        method_cfg = {**self.cfg["methods"][method], "min_steps": None, **method_overrides}
        config = {**self.cfg, "models": {"minilm": self.encoder_cfg()}, "methods": {method: method_cfg}}
        return RunSpec.from_config(config, "fpb", "minilm", method, run_dir=self.tmp / "runs" / run_name,
                                   threads=self.threads,
                                   inputs={"table": str(self.fpb_slice()), "tokenized": str(self.fpb_shards())})
