"""Text-to-label fine-tuning of a tiny T5 with LoRA and QLoRA: training, cost facts, both decoding modes, the
adapter round trip, resuming, and regression by generation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from tunebench.modeling import lm, prompts
from tunebench import runner
from tunebench.methods import generative

LABELS = ["negative", "neutral", "positive"]
FAST = {"epochs": 4, "batch_size": 8, "learning_rate": 1.0e-2, "logging_steps": 1, "precision": "fp32"}


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
    assert cost["train_time_s"] > 0 and cost["tokens_per_s"] > 0 and cost["epochs_run"] == 4
    assert cost["quantization"] == ("4bit-nf4" if strategy == "generative_qlora" else None)
    preds = pl.read_parquet(tmp_path / "predictions.parquet")
    probs = preds.select(f"score_{x}" for x in LABELS).to_numpy()
    assert np.allclose(probs.sum(1), 1) and preds["prediction"].to_list() == [LABELS[i] for i in probs.argmax(1)]
    # decoding both: scored predictions, with free generation measured beside them.
    assert {"answer", "generated_prediction"} <= set(preds.columns)
    assert 0 <= scores["generate_unparseable_rate"] <= 1 and "generate_macro_f1" in scores
    assert scores["generate_unparseable_rate"] == pytest.approx(preds["generated_prediction"].is_null().mean())
    assert not (spec.run_dir / "checkpoints").exists()   # checkpoints only serve resuming


def test_qlora_base_is_4bit(make_spec, tiny_t5):
    import bitsandbytes as bnb

    model = generative.build_model(t5_spec(make_spec, tiny_t5, "generative_qlora"))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def training_data(spec):
    """The tokenizer and the templated training set, as generative.run builds them."""
    words = prompts.verbalizers(LABELS)
    template = prompts.Template.parse(None, "classification", list(words.values()))
    tokenizer = lm.load_tokenizer(spec.model_cfg)
    examples = generative.examples(spec, spec.split("train"), tokenizer, template, words)
    return tokenizer, generative.training_set(tokenizer, *examples, 64)


def test_training_lowers_the_loss(make_spec, tiny_t5):
    spec = t5_spec(make_spec, tiny_t5, epochs=6)
    tokenizer, data = training_data(spec)
    trainer, _ = generative.train(spec, generative.build_model(spec), tokenizer, data)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 18 and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


@pytest.mark.parametrize("strategy", ["generative_lora", "generative_qlora"])
def test_adapter_round_trip_gives_identical_predictions(strategy, make_spec, tiny_t5, tmp_path):
    spec = t5_spec(make_spec, tiny_t5, strategy, save_weights=True)
    out = generative.run(spec)
    adapter = spec.run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    quant = generative.quantization_config(spec.method_cfg) if strategy == "generative_qlora" else None
    model = generative.load_adapter(spec.model_cfg, adapter, quant)
    tokenizer = lm.load_tokenizer(spec.model_cfg)
    words = prompts.verbalizers(LABELS)
    template = prompts.Template.parse(None, "classification", list(words.values()))
    sources, _ = generative.examples(spec, spec.split("test"), tokenizer, template, words)
    columns, _ = generative.predict(spec, model, tokenizer, sources, words)
    assert columns["prediction"] == out.predictions["prediction"].to_list()
    assert columns["answer"] == out.predictions["answer"].to_list()
    for label in LABELS:
        assert np.allclose(columns[f"score_{label}"], out.predictions[f"score_{label}"].to_numpy(), atol=1e-6)
    # ... and the trained adapter differs from a fresh one (the comparison can fail).
    fresh, _ = generative.predict(spec, generative.build_model(spec).eval(), tokenizer, sources, words)
    assert not np.allclose(fresh["score_positive"], columns["score_positive"], atol=1e-4)


def test_resumes_from_the_last_checkpoint(make_spec, tiny_t5, capsys):
    spec = t5_spec(make_spec, tiny_t5, epochs=2)
    tokenizer, data = training_data(spec)
    first, _ = generative.train(spec, generative.build_model(spec), tokenizer, data)
    assert list((spec.run_dir / "checkpoints").glob("checkpoint-*"))
    capsys.readouterr()
    again, _ = generative.train(spec, generative.build_model(spec), tokenizer, data)
    assert "resuming from" in capsys.readouterr().out
    assert again.state.global_step == first.state.global_step == 6
    assert [h for h in again.state.log_history if "loss" in h] == [h for h in first.state.log_history if "loss" in h]


def test_regression_generates_numbers(make_spec, tiny_t5, tmp_path):
    spec = t5_spec(make_spec, tiny_t5, task="regression", max_new_tokens=4)
    record = runner.execute(spec, tmp_path / "predictions.parquet", tmp_path / "metrics.json")
    preds = pl.read_parquet(tmp_path / "predictions.parquet")
    assert preds["prediction"].dtype == pl.Float64 and "answer" in preds.columns
    assert preds["unparsed"].to_list() == preds["prediction"].is_null().to_list()
    assert record["metrics"]["coverage"] == pytest.approx(1 - preds["unparsed"].mean())
    assert record["cost"]["decoding"] == "generate" and "mae" in record["metrics"]
