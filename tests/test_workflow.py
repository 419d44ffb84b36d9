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
    # smoke.yaml declares SemEval's headlines as the bootstrap's clusters; FPB resamples rows
    bootstrapped = summary.filter(pl.col("ci_low").is_not_null())
    units = dict(bootstrapped.select("dataset", "resampling_unit").unique().iter_rows())
    assert units == {"fpb": "row", "semeval17_headlines": "group"}
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


def test_changing_what_the_bootstrap_resamples_reruns_only_the_aggregate(smoke_run):
    config = smoke_config()
    config["datasets"]["semeval17_headlines"]["cluster"] = None   # rows instead of headlines
    assert jobs_planned(smoke_run[0], config) == {"aggregate": 1, "report": 1, "all": 1}


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


def test_a_tuned_method_reuses_its_winning_trial_and_lends_its_rate(tmp_path):
    """Rule tune_encoder runs once for `full` (a full-length trial per rate on each of the two selection seeds);
    full's seeds 0 and 1 evaluate their winning trials' models, seed 2 trains; qlora borrows full's rate and has
    no selection job."""
    from conftest import make_workdir

    workdir = make_workdir(tmp_path / "tuned")
    config = smoke_config()
    config["methods"] = {
        "full": {"strategy": "full", "learning_rate_grid": [1e-5, 1e-3], "epochs": 1, "max_train_samples": 150,
                 "min_steps": None, "precision": "fp32", "grid_extensions": 0},
        "qlora": {"strategy": "qlora", "learning_rate_from": "full", "learning_rate_grid": None, "epochs": 1,
                  "max_train_samples": 150, "min_steps": None}}
    config["seeds"] = [0, 1, 2]
    config["study"] = [{"datasets": ["fpb"], "models": ["tiny_bert"], "methods": ["full"]},
                       {"datasets": ["fpb"], "models": ["tiny_bert"], "methods": ["qlora"], "seeds": [0]}]
    config["report"] = {"comparisons": [["full", "qlora"]], "bootstrap_samples": 100}
    (workdir / "tuned.yaml").write_text(yaml.safe_dump(config))
    planned = run_snakemake(workdir, "--dry-run", "--quiet", "rules", configfile="tuned.yaml").stdout
    assert re.search(r"^tune_encoder\s+1$", planned, re.M) and re.search(r"^finetune_encoder\s+4$", planned, re.M)
    run_snakemake(workdir, configfile="tuned.yaml")

    selection = json.loads((workdir / "results/selection/fpb/tiny_bert/full.json").read_text())
    assert selection["reusable_by_seeds"] == [0, 1] and selection["seeds"] == [0, 1]
    assert set(selection["dev_by_value_and_seed"]["1e-05"]) == {"0", "1"}
    assert (workdir / "results/selection/fpb/tiny_bert/full.trained/seed1/weights.safetensors").exists()
    cost = {name: json.loads((workdir / f"results/runs/fpb/tiny_bert/{name}/metrics.json").read_text())["cost"]
            for name in ("full/seed0", "full/seed1", "full/seed2", "qlora/seed0")}
    assert cost["full/seed0"]["resumed_from"] == "selection trial" == cost["full/seed1"]["resumed_from"]
    assert not cost["full/seed2"]["resumed_from"]
    assert cost["qlora/seed0"]["learning_rate"] == selection["chosen"] == cost["full/seed2"]["learning_rate"]
    assert cost["qlora/seed0"]["selection"]["from_method"] == "full" and not cost["qlora/seed0"]["resumed_from"]
    runs = pl.read_csv(workdir / "results/runs.csv")
    assert runs.filter(pl.col("method") == "qlora")["learning_rate_from"][0] == "full"
    assert "Learning-rate selection on dev" in (workdir / "results/report.md").read_text()


# ---- a new trained encoder strategy: one module and one registry entry, through the real rules ----------------

BITFIT_MODULE = '''"""bitfit: only the bias terms (and the new head) train (Ben Zaken et al. 2022): a strategy added by a test."""


def train_biases(model, cfg):
    model.requires_grad_(False)
    for name, parameter in model.named_parameters():
        if name.endswith(".bias") or name.startswith("classifier."):
            parameter.requires_grad_(True)
    return model
'''
BITFIT_ENTRY = '''    Strategy("bitfit", "encoder", inputs=TOKENIZED, trains=True, approach="fine-tuned encoder",
             trainable="tunebench.methods.bitfit:train_biases", defaults={"learning_rate_grid": [1.0e-3, 1.0e-2]}),
'''


def repository_with_bitfit(path):
    """A copy of the workflow and package with the bitfit strategy added: its module, and its entry at the end
    of the registry's STRATEGIES (nothing else changed)."""
    import shutil

    path.mkdir(parents=True)
    for name in ("Snakefile", "envs", "profiles"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, path / name)
    shutil.copytree(REPO / "workflow", path / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    (path / "workflow/tunebench/methods/bitfit.py").write_text(BITFIT_MODULE)
    registry = path / "workflow/tunebench/families.py"
    text = registry.read_text()
    start = text.index("STRATEGIES: tuple[Strategy, ...] = (")
    end = text.index("\n)\n", start)
    registry.write_text(text[:end + 1] + BITFIT_ENTRY + text[end + 1:])
    return path


def test_a_new_trained_encoder_strategy_runs_through_the_rules_selection_and_report(tmp_path):
    """bitfit, added by its module and one registry entry, is validated against the encoder keys, tokenised
    for, tuned on dev by rule tune_encoder (its learning rate chosen from its registry default grid), run by
    finetune_encoder training only its biases, aggregated and reported as a fine-tuned encoder."""
    from conftest import make_workdir

    repo = repository_with_bitfit(tmp_path / "repo")
    workdir = make_workdir(tmp_path / "bitfit")
    config = smoke_config()
    config["methods"] = {"bitfit": {"strategy": "bitfit", "epochs": 1, "max_train_samples": 120, "min_steps": None,
                                    "precision": "fp32", "grid_extensions": 0, "select_seeds": 1},
                         "majority": {"strategy": "majority"}}
    config["study"] = [{"datasets": ["fpb"], "models": ["tiny_bert"], "methods": ["bitfit"]},
                       {"datasets": ["fpb"], "methods": ["majority"]}]
    config["report"] = {"comparisons": [["bitfit", "majority"]], "bootstrap_samples": 100}
    (workdir / "bitfit.yaml").write_text(yaml.safe_dump(config))
    snakefile = repo / "Snakefile"
    planned = run_snakemake(workdir, "--dry-run", "--quiet", "rules", configfile="bitfit.yaml",
                            snakefile=snakefile).stdout
    assert re.search(r"^tune_encoder\s+1$", planned, re.M) and re.search(r"^finetune_encoder\s+1$", planned, re.M)
    run_snakemake(workdir, "--cores", "2", configfile="bitfit.yaml", snakefile=snakefile)

    selection = json.loads((workdir / "results/selection/fpb/tiny_bert/bitfit.json").read_text())
    assert selection["declared_grid"] == [1e-3, 1e-2] and selection["chosen"] in (1e-3, 1e-2)
    record = json.loads((workdir / "results/runs/fpb/tiny_bert/bitfit/seed0/metrics.json").read_text())
    assert record["family"] == "encoder" and record["strategy"] == "bitfit"
    assert record["cost"]["learning_rate"] == selection["chosen"]
    assert record["cost"]["resumed_from"] == "selection trial"   # the winning trial was this run
    assert 0 < record["cost"]["trainable_fraction"] < 0.5        # biases and head only
    runs = pl.read_csv(workdir / "results/runs.csv")
    assert runs.filter(pl.col("method") == "bitfit")["family"].to_list() == ["encoder"]
    report = (workdir / "results/report.md").read_text()
    assert "bitfit" in report and "Learning-rate selection on dev" in report
