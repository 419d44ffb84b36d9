"""A user's own dataset with `{strategy: X}` and nothing else must give a fair run of X, not a strawman: every
trained strategy beats the trivial baseline on dev with its defaults. The same with the old one-size defaults
(learning rate 5e-5 for every strategy, 3 epochs, no step floor) is kept as a regression check: it fails."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tiny_models import build_tiny_bert
from tunebench import config as tbconfig
from tunebench.modeling.features import encode_features
from tunebench.modeling.tokenize import tokenize_table
from tunebench.runner import execute
from tunebench.spec import RunSpec

LABELS = ["negative", "neutral", "positive"]
SIGNAL = {"negative": ["slump", "loss", "cut"], "neutral": ["meeting", "filing", "board"],
          "positive": ["record", "beat", "growth"]}
FILLER = ["the", "firm", "said", "on", "monday", "its", "shares", "quarter", "report", "market", "analysts"]
OLD_DEFAULTS = {"learning_rate": 5e-5, "epochs": 3, "learning_rate_grid": None, "min_steps": None}


def planted_table(n: int = 600, seed: int = 0) -> pl.DataFrame:
    """Microblog-like posts: filler words plus one word that sets the class; the score is the class's sign plus
    noise. Split 80/10/10."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = LABELS[rng.integers(3)]
        words = list(rng.choice(FILLER, size=rng.integers(5, 12))) + [rng.choice(SIGNAL[label])]
        rng.shuffle(words)
        rows.append({"id": f"p{i}", "text": " ".join(words), "label": label,
                     "target": float(LABELS.index(label) - 1) * 0.6 + rng.normal(0, 0.15), "group": None,
                     "split": "test" if i % 10 == 0 else "dev" if i % 10 == 1 else "train"})
    return pl.DataFrame(rows, schema_overrides={"group": pl.String})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("defaults")
    build_tiny_bert(root / "bert", corpus=[" ".join(FILLER + sum(SIGNAL.values(), []))] * 3)
    planted_table().write_parquet(root / "table.parquet")
    model = model_cfg(root)
    tokenize_table(root / "table.parquet", model, root / "tokenized")
    encode_features(root / "tokenized", model, "mean", root / "mean.npz")
    return root


def model_cfg(root):
    return {"kind": "encoder", "path": str(root / "bert"), "max_length": 32, "pooling": "mean"}


def run(workspace, tmp_path, task: str, method: dict) -> dict:
    ds = {"loader": "table", "path": "own.jsonl", "task": task, "columns": {"label": "label", "target": "target"}}
    if task == "classification":
        ds["labels"] = LABELS
    config = tbconfig.validate({"datasets": {"own": ds}, "models": {"tiny": model_cfg(workspace)},
                                "methods": {"m": method},
                                "study": [{"datasets": ["own"], "models": ["tiny"], "methods": ["m"]}]})
    config["methods"] = {method["strategy"]: config["methods"]["m"]}
    spec = RunSpec.from_config(config, "own", "tiny", method["strategy"], run_dir=tmp_path / "run", threads=2,
                               inputs={"table": str(workspace / "table.parquet"),
                                       "tokenized": str(workspace / "tokenized"),
                                       "features": str(workspace / "mean.npz")})
    return execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("strategy", ["head", "lora", "top_k", "full"])
def test_strategy_defaults_beat_the_trivial_baseline_on_dev(workspace, tmp_path, task, strategy):
    check = run(workspace, tmp_path, task, {"strategy": strategy})["cost"]["learning_check"]
    assert check["beats_trivial"] and check["learned"], check


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_old_one_size_defaults_leave_lora_a_strawman(workspace, tmp_path, task):
    check = run(workspace, tmp_path, task, {"strategy": "lora", **OLD_DEFAULTS})["cost"]["learning_check"]
    assert not check["learned"] and check["reason"], check
