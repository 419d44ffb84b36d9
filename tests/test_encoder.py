"""Encoder strategies on a tiny BERT: which parameters train, loss falls, save/load, resume, cached head."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tiny_models import build_tiny_bert
from tunebench import config as tbconfig
from tunebench.methods.encoder import build_model, encoder_layers, feature_splits
from tunebench.modeling.training import load_trainable, save_trainable
from tunebench.modeling.features import encode_features
from tunebench.runner import execute
from tunebench.spec import RunSpec
from tunebench.modeling.tokenize import tokenize_table

LABELS = ["negative", "neutral", "positive"]
WORDS = {"negative": ["plunge", "fall", "loss"], "neutral": ["meet", "report", "board"],
         "positive": ["surge", "rise", "profit"]}
FILLER = ["the", "company", "shares", "today", "in", "quarter", "said"]


def synthetic_table(n: int = 240, seed: int = 0) -> pl.DataFrame:
    """Sentences whose class is set by one planted word; the target is the class's sign plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % 3]
        words = list(rng.choice(FILLER, size=5)) + [rng.choice(WORDS[label])]
        rng.shuffle(words)
        split = "test" if i % 10 == 0 else "dev" if i % 10 == 1 else "train"
        rows.append({"id": f"r{i}", "text": " ".join(words), "label": label,
                     "target": float(LABELS.index(label) - 1) + rng.normal(0, 0.1), "group": None, "split": split})
    return pl.DataFrame(rows, schema_overrides={"group": pl.String})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoder")
    corpus = [" ".join(FILLER + sum(WORDS.values(), []))] * 3
    model_path = build_tiny_bert(root / "bert", corpus=corpus)
    table = root / "table.parquet"
    synthetic_table().write_parquet(table)
    model_cfg = resolved_model(str(model_path))
    tokenize_table(table, model_cfg, root / "tokenized")
    for pooling in ("mean", "cls"):
        encode_features(root / "tokenized", model_cfg, pooling, root / f"{pooling}.npz")
    return root


def resolved_model(path: str, pooling: str = "mean") -> dict:
    cfg = resolved({"strategy": "full"}, model={"kind": "encoder", "path": path, "max_length": 32, "pooling": pooling})
    return cfg["models"]["m"]


def resolved(method: dict, model: dict | None = None, task: str = "classification") -> dict:
    """A minimal config pushed through the schema, so every default is filled."""
    ds = {"loader": "table", "path": "x.csv", "task": task, "columns": {"label": "label", "target": "target"}}
    if task == "classification":
        ds["labels"] = LABELS
    config = {"datasets": {"d": ds}, "methods": {"m": method}, "study": [{"datasets": ["d"], "methods": ["m"]}],
              "models": {"m": model or {"kind": "encoder", "path": "bert-base-uncased"}}}
    config["study"][0]["models"] = ["m"]
    return tbconfig.validate(config)


def make_spec(root: Path, strategy: str, task: str = "classification", run_dir=None, pooling="mean", **method):
    cfg = resolved({"strategy": strategy, "epochs": 3, "learning_rate": 5e-3, "batch_size": 16,
                    "early_stopping_patience": None, "precision": "fp32", **method}, task=task)
    config = {"datasets": cfg["datasets"], "models": {"tiny": resolved_model(str(root / "bert"), pooling)},
              "methods": {strategy: cfg["methods"]["m"]}}
    return RunSpec.from_config(config, "d", "tiny", strategy, run_dir=run_dir or root / "runs" / f"{strategy}-{task}",
                               inputs={"table": str(root / "table.parquet"), "tokenized": str(root / "tokenized"),
                                       "features": str(root / f"{pooling}.npz")})


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("strategy", ["full", "top_k", "lora", "qlora"])
def test_exactly_the_intended_parameters_train(workspace, strategy, task):
    spec = make_spec(workspace, strategy, task, k=1)
    model = build_model(spec)
    names = trainable_names(model)
    every = {n for n, _ in model.named_parameters()}
    head = {n for n in every if "classifier" in n and "original_module" not in n}  # peft keeps a frozen copy
    assert head and head <= names
    if strategy == "full":
        assert names == every
    elif strategy == "top_k":
        last = len(encoder_layers(model.encoder)) - 1
        assert all(n.startswith(f"encoder.encoder.layer.{last}.") or "classifier" in n for n in names)
        assert any(n.startswith(f"encoder.encoder.layer.{last}.") for n in names)
    else:
        adapters = {n for n in names if "lora_" in n}
        assert adapters and names == adapters | head
        assert all(("query" in n or "value" in n) for n in adapters)
    out_features = 3 if task == "classification" else 1
    assert any(p.shape[0] == out_features for n, p in model.named_parameters() if "classifier" in n and "weight" in n)


def test_cls_pooling_trains_the_pooler_with_adapters(workspace):
    spec = make_spec(workspace, "lora", pooling="cls")
    names = trainable_names(build_model(spec))
    assert any("pooler" in n for n in names), "the pooler sits between encoder and head: it must train"


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("strategy", ["top_k", "full", "lora", "qlora"])
def test_training_lowers_the_loss_and_scores(workspace, strategy, task, tmp_path):
    spec = make_spec(workspace, strategy, task, run_dir=tmp_path / "run", k=1, logging_steps=1)
    record = execute(spec, tmp_path / "predictions.parquet", tmp_path / "metrics.json")
    assert record["cost"]["trainable_params"] > 0
    assert not (spec.run_dir / "checkpoints").exists(), "checkpoints are dropped after a finished run"
    preds = pl.read_parquet(tmp_path / "predictions.parquet")
    assert preds.height == 24
    losses = record["cost"]["train_losses"]
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("strategy", ["full", "qlora"])
def test_the_attention_implementation_is_the_entrys_and_is_recorded(workspace, strategy, tmp_path):
    """`attention: eager` reaches the loaded encoder (sdpa when unset; `auto` trains with eager on a CPU); same
    mathematics, so the same predictions up to rounding; the run records which kernels ran."""
    import dataclasses

    predictions = {}
    for attention, ran in ((None, "sdpa"), ("eager", "eager"), ("auto", "eager")):
        spec = make_spec(workspace, strategy, run_dir=tmp_path / f"{attention}", k=1, epochs=1)
        if attention:
            spec = dataclasses.replace(spec, model_cfg={**spec.model_cfg, "attention": attention})
        record = execute(spec, tmp_path / f"{attention}.parquet", tmp_path / f"{attention}.json")
        assert record["cost"]["attention"] == ran
        predictions[attention] = pl.read_parquet(tmp_path / f"{attention}.parquet")["prediction"].to_list()
    agree = np.mean([a == b for a, b in zip(predictions[None], predictions["eager"])])
    assert agree >= 0.9, agree
    assert predictions["auto"] == predictions["eager"]
    with pytest.raises(tbconfig.ConfigError, match="attention"):
        resolved({"strategy": "full"}, model={"kind": "encoder", "path": "x", "attention": "flash"})


def test_save_then_load_gives_identical_predictions(workspace, tmp_path):
    spec = make_spec(workspace, "lora", run_dir=tmp_path, save_weights=True)
    execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    first = pl.read_parquet(tmp_path / "p.parquet")
    model = load_trainable(build_model(spec), tmp_path / "weights.safetensors").eval()
    test = synthetic_table().filter(pl.col("split") == "test")
    from tunebench.modeling.loading import load_tokenizer

    batch = load_tokenizer(spec.model_cfg)(test["text"].to_list(), padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])["logits"]
    probs = torch.softmax(logits.float(), -1).numpy()
    np.testing.assert_allclose(probs, first.select([f"score_{lab}" for lab in LABELS]).to_numpy(), atol=1e-5)


def test_cached_features_are_the_frozen_encoders_output(workspace):
    """The head's cached features = the frozen encoder's pooled output (eval mode), so fitting the head on the
    cache is fitting it on the encoder."""
    spec = make_spec(workspace, "head")
    data, _, _ = feature_splits(spec)
    model = build_model(make_spec(workspace, "full")).eval()
    from tunebench.modeling.loading import load_tokenizer, pool

    texts = synthetic_table().filter(pl.col("split") == "train")["text"].to_list()
    batch = load_tokenizer(spec.model_cfg)(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        hidden = model.encoder(**batch).last_hidden_state
        live = pool(hidden, batch["attention_mask"], "mean").numpy()
    np.testing.assert_allclose(np.asarray(data["train"][0], dtype=np.float32), live, atol=1e-5)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_head_is_fitted_to_convergence_with_its_penalty_chosen_on_dev(workspace, task, tmp_path):
    spec = make_spec(workspace, "head", task, run_dir=tmp_path / "run")
    record = execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    search = record["cost"]["grid_search"]
    assert search["declared_grid"] == sorted(spec.method_cfg["C_grid" if task == "classification" else "alpha_grid"])
    assert list(record["cost"]["selected"].values())[0] == search["chosen"] and search["chosen"] in search["grid"]
    assert not search["on_edge"] or search["extension_bound_hit"]   # grown until the choice is inside
    if task == "classification":   # the planted words separate the classes: a converged head finds them
        assert record["metrics"]["accuracy"] > 0.8
    else:
        assert record["metrics"]["r2"] > 0.5


RESUME_SCRIPT = """
import sys, pickle
sys.path[:0] = {paths!r}
from tunebench.runner import execute
spec = pickle.load(open({spec!r}, "rb"))
execute(spec, {pred!r}, {metrics!r})
"""


def test_killed_run_resumes_and_matches_an_uninterrupted_run(workspace, tmp_path):
    """SIGKILL after the first checkpoint, start again: same metrics as a run that was never interrupted."""
    import pickle

    settings = dict(epochs=6, learning_rate=1e-3)
    straight = make_spec(workspace, "full", run_dir=tmp_path / "straight", **settings)
    reference = execute(straight, tmp_path / "straight.parquet", tmp_path / "straight.json")

    spec = make_spec(workspace, "full", run_dir=tmp_path / "killed", **settings)
    spec_file = tmp_path / "spec.pkl"
    spec_file.write_bytes(pickle.dumps(spec))
    script = RESUME_SCRIPT.format(paths=sys.path, spec=str(spec_file), pred=str(tmp_path / "k.parquet"),
                                  metrics=str(tmp_path / "k.json"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = spec.run_dir / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "k.json").exists(), "killed too late to test resuming"
    assert list(checkpoints.glob("checkpoint-*"))

    resumed = execute(spec, tmp_path / "k.parquet", tmp_path / "k.json")
    assert resumed["cost"]["resumed_from"], "the second start should resume from the checkpoint"
    for key in ("accuracy", "macro_f1", "mcc"):
        assert resumed["metrics"][key] == reference["metrics"][key]
    assert pl.read_parquet(tmp_path / "k.parquet").equals(pl.read_parquet(tmp_path / "straight.parquet"))


@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_learning_rate_grid_keeps_the_best_on_dev(workspace, strategy, tmp_path):
    spec = make_spec(workspace, strategy, run_dir=tmp_path / "run", learning_rate_grid=[5e-2, 1e-7, 1e-3],
                     epochs=4, trial_fraction=0.5, grid_extensions=0)
    record = execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    selection = record["cost"]["selection"]
    scores = selection["dev_by_learning_rate"]
    assert selection["grid"] == [1e-7, 1e-3, 5e-2] and set(scores) == {"1e-07", "0.001", "0.05"}
    assert f"{selection['chosen']:g}" == max(scores, key=scores.get) and record["cost"]["learning_rate"] == selection["chosen"]
    assert scores["1e-07"] < max(scores.values())        # a learning rate that cannot learn loses on dev
    assert selection["on_edge"] == (selection["chosen"] != 1e-3)
    assert not list(spec.run_dir.glob("trial-*")) and not (spec.run_dir / "checkpoints").exists()


def test_a_trial_trains_trial_fraction_of_the_final_runs_steps(workspace, tmp_path, monkeypatch):
    from tunebench.modeling import training

    steps, real_fit = [], training.fit

    def counting_fit(*args, **kwargs):
        trainer, *rest = real_fit(*args, **kwargs)
        steps.append(trainer.state.global_step)
        return (trainer, *rest)

    monkeypatch.setattr(training, "fit", counting_fit)
    spec = make_spec(workspace, "lora", run_dir=tmp_path / "run", learning_rate_grid=[1e-7, 1e-2], epochs=4,
                     trial_fraction=0.25, grid_extensions=0)
    record = execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    final, trial = record["cost"]["optimizer_steps"], record["cost"]["selection"]["trial_steps"]
    assert trial == math.ceil(0.25 * final) < final
    assert steps == [trial, trial, final]


def test_a_selection_file_fixes_the_learning_rate_of_every_seed(workspace, tmp_path):
    from tunebench.runner import select

    spec = make_spec(workspace, "lora", run_dir=tmp_path / "sel", learning_rate_grid=[1e-7, 1e-2], epochs=2,
                     grid_extensions=0)
    selection = select(spec)
    assert selection["chosen"] == 1e-2 and selection["selection_time_s"] > 0 and not spec.run_dir.exists()
    (tmp_path / "selection.json").write_text(json.dumps({**selection, "chosen": 1e-7}))
    run = make_spec(workspace, "lora", run_dir=tmp_path / "run", learning_rate_grid=[1e-7, 1e-2], epochs=2)
    run.selection_path = str(tmp_path / "selection.json")
    record = execute(run, tmp_path / "p.parquet", tmp_path / "m.json")
    assert record["cost"]["learning_rate"] == 1e-7 and record["cost"]["selection"]["chosen"] == 1e-7


@pytest.mark.parametrize("strategy", ["full", "qlora"])
def test_the_first_seed_reuses_the_winning_full_length_trial(workspace, strategy, tmp_path):
    """trial_fraction 1: the trial at the chosen rate is the first seed's run, so that run evaluates the trial's
    trained model — and gets exactly what training it again would give. Other seeds train."""
    from tunebench.runner import select

    grid = dict(learning_rate_grid=[1e-7, 1e-2], epochs=2, trial_fraction=1, grid_extensions=0)
    tune = make_spec(workspace, strategy, run_dir=tmp_path / "sel", **grid)
    selection = select(tune, tmp_path / "sel.trained")
    assert selection["chosen"] == 1e-2 and selection["reusable_by_seeds"] == [0] and selection["trial_steps"] is None
    assert (tmp_path / "sel.trained" / "seed0" / "weights.safetensors").exists() and not tune.run_dir.exists()
    (tmp_path / "sel.json").write_text(json.dumps(selection))

    def run(seed, **method):
        spec = make_spec(workspace, strategy, run_dir=tmp_path / f"run{seed}-{len(method)}", **{**grid, **method})
        spec.seed = seed
        if "learning_rate" not in method:
            spec.selection_path, spec.trained_dir = str(tmp_path / "sel.json"), str(tmp_path / "sel.trained")
        record = execute(spec, spec.run_dir / "p.parquet", spec.run_dir / "m.json")
        return record, pl.read_parquet(spec.run_dir / "p.parquet")

    reused, reused_preds = run(0)
    trained, trained_preds = run(0, learning_rate=1e-2, learning_rate_grid=None)
    assert reused["cost"]["resumed_from"] == "selection trial" and not trained["cost"]["resumed_from"]
    assert reused_preds.equals(trained_preds)
    assert reused["cost"]["optimizer_steps"] == trained["cost"]["optimizer_steps"] > 0
    assert reused["cost"]["best_dev_metric"] == trained["cost"]["best_dev_metric"]
    assert reused["cost"]["train_losses"] == trained["cost"]["train_losses"]
    other, _ = run(1)
    assert not other["cost"]["resumed_from"] and other["cost"]["learning_rate"] == 1e-2


def test_shortened_trials_leave_nothing_to_reuse(workspace, tmp_path):
    from tunebench.runner import select

    spec = make_spec(workspace, "lora", run_dir=tmp_path / "sel", learning_rate_grid=[1e-7, 1e-2], epochs=2,
                     trial_fraction=0.5, grid_extensions=0)
    selection = select(spec, tmp_path / "sel.trained")
    assert selection["reusable_by_seeds"] == [] and selection["trial_steps"] > 0
    assert (tmp_path / "sel.trained").is_dir() and not list((tmp_path / "sel.trained").iterdir())


def test_min_steps_raises_epochs_only_on_small_training_sets(workspace):
    from tunebench.modeling.training import epochs_for

    spec = make_spec(workspace, "lora", epochs=2, batch_size=32, min_steps=240)
    assert epochs_for(spec, 923) == 9        # SemEval: 29 batches an epoch
    assert epochs_for(spec, 3876) == 2       # FPB: 122 batches an epoch already give 244 steps
    assert epochs_for(make_spec(workspace, "lora", epochs=2, min_steps=None), 923) == 2


def test_bf16_precision_trains_the_encoder_under_autocast(workspace, tmp_path, monkeypatch):
    from tunebench import hardware
    from tunebench.methods.encoder import TrainingData

    monkeypatch.setattr(hardware, "bf16_fast", lambda: True)
    spec = make_spec(workspace, "full", run_dir=tmp_path / "run", precision="bf16", epochs=1)
    data = TrainingData(spec)
    seen = []
    real_build = build_model

    def build(spec):
        model = real_build(spec)
        model.encoder.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
        return model

    monkeypatch.setattr("tunebench.methods.encoder.build_model", build)
    _, trainer, _, _ = data.fit(spec)
    assert trainer.args.bf16 and seen and all(seen)
