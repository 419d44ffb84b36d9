"""The whole DAG on config/smoke.yaml (tiny BERT, real corpora), and precise incremental reruns."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
import yaml

from conftest import REPO, run_snakemake

pytestmark = pytest.mark.integration


def test_smoke_study_runs_end_to_end(smoke_run):
    workdir, _ = smoke_run
    for name in ("runs.csv", "summary.csv", "comparisons.csv", "report.md", "report.html"):
        assert (workdir / "results" / name).stat().st_size > 0, name
    runs = pl.read_csv(workdir / "results" / "runs.csv")
    assert set(runs["dataset"]) == {"fpb", "semeval17_headlines"}
    assert set(runs["method"]) >= {"majority", "tfidf", "head", "full", "qlora", "few_shot_k1"}
    summary = pl.read_csv(workdir / "results" / "summary.csv")
    assert summary.columns[:10] == ["dataset", "task", "model", "method", "metric", "mean", "sd", "ci_low",
                                    "ci_high", "n_seeds"]
    metrics = json.loads((workdir / "results/runs/fpb/tiny_bert/full/seed0/metrics.json").read_text())
    assert metrics["provenance"]["packages"]["torch"]
    assert metrics["data"]["table_sha256"]
    assert metrics["config"]["method"]["strategy"] == "full"
    for log in ("prepare/fpb.log", "finetune_encoder/fpb/tiny_bert/full/seed0.log", "aggregate.log", "report.log"):
        assert (workdir / "logs" / log).exists(), log
    preds = pl.read_parquet(workdir / "results/runs/semeval17_headlines/none/tfidf/seed0/predictions.parquet")
    test_ids = pl.read_csv(workdir / "results/data/semeval17_headlines/splits.csv").filter(pl.col("split") == "test")
    assert sorted(preds["id"]) == sorted(test_ids["id"])


def jobs_planned(workdir, config: dict | None = None) -> dict[str, int]:
    """Rule → job count of a dry run (optionally on a modified copy of the smoke config)."""
    configfile = "config/smoke.yaml"
    if config is not None:
        (workdir / "modified.yaml").write_text(yaml.safe_dump(config))
        configfile = "modified.yaml"
    out = run_snakemake(workdir, "--dry-run", "--quiet", "rules", configfile=configfile).stdout
    if "Nothing to be done" in out:
        return {}
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M) if m.group(1) != "total"}


def smoke_config() -> dict:
    return yaml.safe_load((REPO / "config/smoke.yaml").read_text())


def test_second_run_is_a_noop(smoke_run):
    assert jobs_planned(smoke_run[0]) == {}


def test_changing_one_method_reruns_only_its_runs_and_the_report(smoke_run):
    config = smoke_config()
    config["methods"]["full"]["learning_rate"] = 2e-3
    assert jobs_planned(smoke_run[0], config) == {"finetune_encoder": 2, "aggregate": 1, "report": 1, "all": 1}


def test_changing_a_report_option_reruns_only_the_report(smoke_run):
    config = smoke_config()
    config["report"]["dictionary_words"] = 7
    assert jobs_planned(smoke_run[0], config) == {"report": 1, "all": 1}


def test_changing_max_length_reruns_tokenisation_and_its_runs(smoke_run):
    config = smoke_config()
    config["models"]["tiny_bert"]["max_length"] = 24
    planned = jobs_planned(smoke_run[0], config)
    assert planned == {"tokenize": 2, "encode_features": 2, "finetune_encoder": 6, "embed_fewshot": 1,
                       "aggregate": 1, "report": 1, "all": 1}


def test_adding_a_seed_adds_only_the_new_jobs(smoke_run):
    config = smoke_config()
    config["seeds"] = [0, 1]
    planned = jobs_planned(smoke_run[0], config)
    assert planned == {"run_baseline": 4, "finetune_encoder": 6, "embed_fewshot": 1, "aggregate": 1, "report": 1,
                       "all": 1}


def test_adding_a_dataset_adds_only_its_jobs(smoke_run):
    config = smoke_config()
    config["datasets"]["fpb75"] = {**config["datasets"]["fpb"], "agreement": "75agree", "sha256": {}}
    config["study"][0]["datasets"].append("fpb75")
    assert jobs_planned(smoke_run[0], config) == {"prepare": 1, "run_baseline": 2, "aggregate": 1, "report": 1,
                                                  "all": 1}
