"""Text-to-label fine-tuning of a tiny T5 with LoRA and QLoRA: training, cost facts, both decoding modes, the
adapter round trip, resuming, and regression by generation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from tunebench import runner
from tunebench.methods import generative
from tunebench.modeling import loading, prompts

LABELS = ["negative", "neutral", "positive"]
FAST = {"epochs": 4, "batch_size": 8, "learning_rate": 1.0e-2, "logging_steps": 1, "precision": "fp32",
        "min_steps": None}   # the strategy default step floor would multiply these tiny runs


def t5_spec(make_spec, tiny_t5, strategy="generative_lora", task="classification", **method):
    return make_spec({"kind": "seq2seq", "path": str(tiny_t5), "max_length": 64},
                     {"strategy": strategy, **FAST, **method}, task=task)


@pytest.mark.parametrize("strategy", ["generative_lora", "generative_qlora"])
def test_fine_tuning_run(strategy, make_spec, tiny_t5, tmp_path):
    spec = t5_spec(make_spec, tiny_t5, strategy)
    record = runner.execute(spec, tmp_path / "predictions.parquet", tmp_path / "metrics.json")
    cost, scores = record["cost"], record["metrics"]
    # LoRA r=8 on q and v of 2 encoder + 2 decoder layers (self- and cross-attention): 12 modules × 8 × (64 + 64).
    assert cost["trainable_params"] == 12 * 8 * (64 + 64)
    assert cost["total_params"] > 10 * cost["trainable_params"]
    assert cost["train_time_s"] > 0 and cost["tokens_per_s"] > 0 and cost["epochs_run"] <= 4
    assert cost["quantization"] == ("4bit-nf4" if strategy == "generative_qlora" else None)
    if strategy == "generative_qlora":   # the base really was 4-bit while the adapters trained
        assert cost["linear4bit_modules"] > 0 and cost["qlora_path"]
    preds = pl.read_parquet(tmp_path / "predictions.parquet")
    probs = preds.select(f"score_{x}" for x in LABELS).to_numpy()
    assert np.allclose(probs.sum(1), 1) and preds["prediction"].to_list() == [LABELS[i] for i in probs.argmax(1)]
    # decoding both: scored predictions, with free generation measured beside them.
    assert {"answer", "generated_prediction"} <= set(preds.columns)
    generated = scores["generate"]
    assert 0 <= generated["unparseable_rate"] <= 1 and "macro_f1" in generated
    assert generated["unparseable_rate"] == pytest.approx(preds["generated_prediction"].is_null().mean())
    assert not (spec.run_dir / "checkpoints").exists()   # checkpoints only serve resuming


def test_qlora_base_is_4bit(make_spec, tiny_t5):
    import bitsandbytes as bnb

    model = generative.build_model(t5_spec(make_spec, tiny_t5, "generative_qlora"))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def training_data(spec):
    """The tokenizer, the prompt builder and the templated training / dev sets, as generative.run builds them."""
    words = prompts.verbalizers(LABELS)
    template = prompts.Template.parse(None, "classification", list(words.values()))
    tokenizer = loading.load_tokenizer(spec.model_cfg)
    examples = generative.Examples(spec, tokenizer, prompts.prompt_format(template, tokenizer, spec.model_cfg), words)
    return tokenizer, examples, examples.training_set(spec.split("train")), examples.training_set(spec.split("dev"))


def test_training_lowers_the_loss(make_spec, tiny_t5):
    spec = t5_spec(make_spec, tiny_t5, epochs=6, early_stopping_patience=None)
    tokenizer, _, train, dev = training_data(spec)
    trainer, _, _ = generative.train_model(spec, generative.build_model(spec), tokenizer, train, dev)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 18 and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


@pytest.mark.parametrize("strategy", ["generative_lora", "generative_qlora"])
def test_adapter_round_trip_gives_identical_predictions(strategy, make_spec, tiny_t5, tmp_path):
    spec = t5_spec(make_spec, tiny_t5, strategy, save_weights=True)
    out = generative.run(spec)
    adapter = spec.run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    model = generative.load_adapter(spec, adapter)
    tokenizer, examples, _, _ = training_data(spec)
    columns, _ = generative.evaluate(spec, model, tokenizer, examples, spec.split("test"), "both")
    assert columns["prediction"] == out.predictions["prediction"].to_list()
    assert columns["answer"] == out.predictions["answer"].to_list()
    for label in LABELS:
        assert np.allclose(columns[f"score_{label}"], out.predictions[f"score_{label}"].to_numpy(), atol=1e-6)
    # ... and the trained adapter differs from a fresh one (the comparison can fail).
    fresh, _ = generative.evaluate(spec, generative.build_model(spec), tokenizer, examples, spec.split("test"), "both")
    assert not np.allclose(fresh["score_positive"], columns["score_positive"], atol=1e-4)


def test_resumes_from_the_last_checkpoint(make_spec, tiny_t5, capsys):
    spec = t5_spec(make_spec, tiny_t5, epochs=2)
    tokenizer, _, train, dev = training_data(spec)
    first, _, _ = generative.train_model(spec, generative.build_model(spec), tokenizer, train, dev)
    assert list((spec.run_dir / "checkpoints").glob("checkpoint-*"))
    capsys.readouterr()
    again, _, resumed = generative.train_model(spec, generative.build_model(spec), tokenizer, train, dev)
    assert resumed
    assert "resuming from" in capsys.readouterr().out
    assert again.state.global_step == first.state.global_step == 6
    assert [h for h in again.state.log_history if "loss" in h] == [h for h in first.state.log_history if "loss" in h]


def test_regression_generates_numbers(make_spec, tiny_t5, tmp_path):
    spec = t5_spec(make_spec, tiny_t5, task="regression", max_new_tokens=4)
    record = runner.execute(spec, tmp_path / "predictions.parquet", tmp_path / "metrics.json")
    preds = pl.read_parquet(tmp_path / "predictions.parquet")
    assert preds["prediction"].dtype == pl.Float64 and "answer" in preds.columns
    assert preds["unparsed"].to_list() == preds["prediction"].is_null().to_list()
    assert record["metrics"]["unparseable_rate"] == pytest.approx(preds["unparsed"].mean())
    assert record["cost"]["decoding"] == "generate" and "mae" in record["metrics"]


def test_dequantise_once_cache_computes_what_bitsandbytes_computes(make_spec, tiny_t5):
    """base_cache on (the fast path for CPUs without AVX-512) keeps the 4-bit weights and gives the same outputs
    and gradients as bitsandbytes' per-forward dequantisation: the adapters train on the same base."""
    import torch
    from tunebench.modeling import training

    outputs = {}
    for setting in ("off", "on"):
        spec = t5_spec(make_spec, tiny_t5, "generative_qlora", base_cache=setting, compute_dtype="float32")
        model = generative.build_model(spec)
        assert training.count_4bit_modules(model) > 0
        assert ("dense cache" in training.qlora_path(model)) == (setting == "on")
        ids = torch.tensor([[5, 6, 7, 8, 1]])
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([[9, 1]]))
        out.loss.backward()
        grads = [p.grad.clone() for n, p in model.named_parameters() if "lora_B" in n]
        outputs[setting] = (out.logits.detach(), grads)
    assert torch.allclose(outputs["off"][0], outputs["on"][0], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(outputs["off"][1], outputs["on"][1]))


def test_the_first_seed_reuses_the_winning_trial_adapter(make_spec, tiny_t5, tmp_path):
    """A full-length trial at the chosen rate is the first seed's run: that run evaluates the kept adapter and
    writes what training it again would."""
    import json

    model = {"kind": "seq2seq", "path": str(tiny_t5), "max_length": 64}
    grid = {"strategy": "generative_lora", **FAST, "epochs": 2, "learning_rate_grid": [1e-6, 1e-2],
            "trial_fraction": 1, "grid_extensions": 0}
    selection = runner.select(make_spec(model, grid, run_dir=tmp_path / "sel"), tmp_path / "sel.trained")
    assert selection["reusable_by_seeds"] == [0] and (tmp_path / "sel.trained" / "seed0" / "weights.safetensors").exists()
    (tmp_path / "sel.json").write_text(json.dumps(selection))

    reused = make_spec(model, grid, run_dir=tmp_path / "reused", selection_path=str(tmp_path / "sel.json"),
                       trained_dir=str(tmp_path / "sel.trained"))
    again = make_spec(model, {**grid, "learning_rate_grid": None, "learning_rate": selection["chosen"]},
                      run_dir=tmp_path / "again")
    first = runner.execute(reused, tmp_path / "r.parquet", tmp_path / "r.json")
    second = runner.execute(again, tmp_path / "a.parquet", tmp_path / "a.json")
    assert first["cost"]["resumed_from"] == "selection trial" and not second["cost"]["resumed_from"]
    assert pl.read_parquet(tmp_path / "r.parquet").equals(pl.read_parquet(tmp_path / "a.parquet"))
    assert first["cost"]["optimizer_steps"] == second["cost"]["optimizer_steps"] > 0
    assert first["cost"]["best_dev_loss"] == second["cost"]["best_dev_loss"]
