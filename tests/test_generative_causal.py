"""A generative instruct model from a GGUF file, end to end on a tiny ChatML Llama: conversion (what rule
import_model does), prompts as chat turns, in-context learning, and causal LoRA / QLoRA instruction tuning."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from conftest import gguf_model_cfg
from tunebench import config as tbconfig
from tunebench import files, runner
from tunebench.methods import generative
from tunebench.modeling import loading, prompts, training

LABELS = ["negative", "neutral", "positive"]


# The Trainer's stand-in for compute_loss called outside a Trainer: an accelerator whose autocast does nothing.
NO_AUTOCAST = SimpleNamespace(accelerator=SimpleNamespace(autocast=contextlib.nullcontext))


def chat_spec(make_spec, tiny_gguf, tiny_chat_dir, method, task="classification"):
    spec = make_spec(gguf_model_cfg(tiny_gguf), method, task=task)
    spec.model_dir = str(tiny_chat_dir)
    return spec


def test_conversion_keeps_the_model_and_records_the_file(tiny_gguf, tiny_chat_dir):
    source = json.loads((tiny_chat_dir / "source.json").read_text())
    assert source["sha256"] == files.sha256(tiny_gguf) and source["architecture"] == "llama"
    cfg = gguf_model_cfg(tiny_gguf)
    direct, converted = loading.load_generative(cfg), loading.load_generative(cfg, model_dir=tiny_chat_dir)
    ids = torch.tensor([[1, 20, 30, 40, 2]])
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, converted(ids).logits)
    tokenizer = loading.load_tokenizer(cfg, tiny_chat_dir)
    assert tokenizer.chat_template and tokenizer.padding_side == "left"
    assert loading.model_source(cfg, tiny_chat_dir)["sha256"] == source["sha256"]


def test_a_pinned_sha256_that_differs_stops_the_conversion(tiny_gguf, tmp_path):
    cfg = gguf_model_cfg(tiny_gguf, sha256="0" * 64)
    with pytest.raises(loading.ModelError, match=r"models\.m\.sha256'.*expects 0000"):
        loading.convert_gguf(cfg, tmp_path / "out", where="config key 'models.m")
    assert not (tmp_path / "out").exists()


@pytest.mark.bad_input
def test_a_missing_or_damaged_gguf_file_is_a_config_error(tiny_gguf, tmp_path):
    def validate(model):
        return tbconfig.validate({"datasets": {"d": {"loader": "table", "path": "t.csv", "task": "regression",
                                                     "columns": {"target": "y"}}},
                                  "models": {"llm": model}, "methods": {"icl": {"strategy": "icl"}},
                                  "study": [{"datasets": ["d"], "models": ["llm"], "methods": ["icl"]}]})

    with pytest.raises(tbconfig.ConfigError, match=r"models\.llm\.gguf_file'.*does not exist"):
        validate(gguf_model_cfg(tmp_path / "nope.gguf"))
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(b"<html>not found</html>")
    with pytest.raises(tbconfig.ConfigError, match=r"models\.llm\.gguf_file'.*not a GGUF file"):
        validate(gguf_model_cfg(damaged))
    validate(gguf_model_cfg(tiny_gguf))


@pytest.mark.bad_input
def test_an_answer_word_the_parser_cannot_read_back_is_a_config_error():
    config = {"datasets": {"d": {"loader": "table", "path": "t.csv", "task": "classification",
                                 "labels": LABELS, "columns": {"label": "y"}}},
              "models": {"t5": {"kind": "seq2seq", "path": "google/flan-t5-base"}},
              "methods": {"icl": {"strategy": "icl", "verbalizers": {"negative": "up", "positive": "up up"}}},
              "study": [{"datasets": ["d"], "models": ["t5"], "methods": ["icl"]}]}
    with pytest.raises(tbconfig.ConfigError, match=r"methods\.icl\.verbalizers\.positive'.*never be read back"):
        tbconfig.validate(config)


def test_chat_prompts_are_the_turns_the_model_was_trained_on(tiny_gguf, tiny_chat_dir):
    tokenizer = loading.load_tokenizer(gguf_model_cfg(tiny_gguf), tiny_chat_dir)
    template = prompts.Template.parse(None, "classification", LABELS)
    fmt = prompts.prompt_format(template, tokenizer, gguf_model_cfg(tiny_gguf))
    assert isinstance(fmt, prompts.ChatPrompt)
    text = fmt.render("profits rose", [("shares fell", "negative")])
    assert text == ("<|im_start|>system\nClassify the sentiment of the financial text as negative, neutral or "
                    "positive. Answer with one word.<|im_end|>\n"
                    "<|im_start|>user\nText: shares fell\nAnswer:<|im_end|>\n"
                    "<|im_start|>assistant\nnegative<|im_end|>\n"
                    "<|im_start|>user\nText: profits rose\nAnswer:<|im_end|>\n<|im_start|>assistant\n")
    assert prompts.prompt_format(template, tokenizer, gguf_model_cfg(tiny_gguf, chat_template=False)) is template


@pytest.mark.parametrize("selection", ["random", "balanced"])
def test_icl_with_a_chat_model_shares_the_demonstrations_prefix(selection, make_spec, tiny_gguf, tiny_chat_dir,
                                                                tmp_path):
    spec = chat_spec(make_spec, tiny_gguf, tiny_chat_dir, {"strategy": "icl", "k": 3, "selection": selection})
    spec.model_cfg = {**spec.model_cfg, "attention": "auto"}    # prompting is inference: sdpa
    record = runner.execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    cost = record["cost"]
    assert cost["template"] == "chat" and cost["decoding"] == "both" and cost["attention"] == "sdpa"
    assert cost["shared_prefix_tokens"] > 30 and cost["tokens_run"] < cost["prompt_tokens_total"]
    assert record["metrics"]["generate"]["unparseable_rate"] is not None
    preds = pl.read_parquet(tmp_path / "p.parquet")
    assert preds["n_demonstrations"].to_list() == [3] * preds.height


@pytest.mark.parametrize("strategy", ["generative_lora", "generative_qlora"])
def test_causal_instruction_tuning_learns_the_label_words(strategy, make_spec, tiny_gguf, tiny_chat_dir, tmp_path):
    method = {"strategy": strategy, "epochs": 10, "batch_size": 8, "learning_rate": 3e-2, "logging_steps": 1,
              "precision": "fp32", "early_stopping_patience": None, "r": 8}
    spec = chat_spec(make_spec, tiny_gguf, tiny_chat_dir, method)
    record = runner.execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    losses = record["cost"]["train_losses"]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    if strategy == "generative_qlora":
        assert record["cost"]["linear4bit_modules"] == 2 * 7   # every linear layer of both blocks is 4-bit
    assert record["cost"]["model_source"]["sha256"] == files.sha256(tiny_gguf)
    assert record["cost"]["attention"] == "sdpa"   # unset: the library default, recorded
    # It learned the label words: scored, and as the first word it writes (a tiny model this short-trained has
    # not yet learned to stop, so its answers run on).
    assert record["metrics"]["accuracy"] >= 2 / 3
    preds = pl.read_parquet(tmp_path / "p.parquet")
    assert np.mean([a.startswith(g) for a, g in zip(preds["answer"], preds["gold"])]) >= 2 / 3


def test_causal_training_examples_supervise_the_answer_and_the_end_of_turn_only(make_spec, tiny_gguf, tiny_chat_dir):
    spec = chat_spec(make_spec, tiny_gguf, tiny_chat_dir, {"strategy": "generative_lora"})
    tokenizer = loading.load_tokenizer(spec.model_cfg, spec.model_dir)
    template = prompts.Template.parse(None, "classification", LABELS)
    words = prompts.verbalizers(LABELS)
    examples = generative.Examples(spec, tokenizer, prompts.prompt_format(template, tokenizer, spec.model_cfg), words)
    train = spec.split("train")
    data = examples.training_set(train)
    for row, label in zip(data, train["label"]):
        supervised = [t for t in row["labels"] if t != -100]
        assert tokenizer.decode(supervised) == label + "<|im_end|>"
        assert row["labels"][:len(row["input_ids"]) - len(supervised)] == [-100] * (len(row["input_ids"]) - len(supervised))


@pytest.mark.parametrize("strategy", ["generative_lora", "generative_qlora"])
def test_the_answer_only_loss_equals_the_models_own_loss_and_gradients(strategy, make_spec, tiny_gguf,
                                                                        tiny_chat_dir):
    """AnswerLossTrainer runs the output layer on the answer positions only: same loss (averaged, and summed
    over the Trainer's num_items_in_batch), same adapter gradients as the model's full-vocabulary forward."""
    # adapter dropout off: its masks would differ between the two passes
    spec = chat_spec(make_spec, tiny_gguf, tiny_chat_dir,
                     {"strategy": strategy, "precision": "fp32", "lora_dropout": 0.0})
    tokenizer = loading.load_tokenizer(spec.model_cfg, spec.model_dir)
    template = prompts.Template.parse(None, "classification", LABELS)
    examples = generative.Examples(spec, tokenizer, prompts.prompt_format(template, tokenizer, spec.model_cfg),
                                   prompts.verbalizers(LABELS))
    model = generative.build_model(spec)
    with torch.no_grad():   # LoRA's B starts at zero, which would leave every A gradient zero on both sides
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    rows = examples.training_set(spec.split("train")).select(range(6))
    batch = generative.collator(tokenizer, model)([rows[i] for i in range(len(rows))])
    assert (batch["labels"] == -100).float().mean() > 0.5          # most positions are prompt: the saving
    answer_loss = generative.answer_loss_trainer().compute_loss
    count = (batch["labels"][:, 1:] != -100).sum()
    adapters = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(compute):
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in adapters]

    for items in (None, count):
        reference = loss_and_grads(lambda: model(**batch, **({"num_items_in_batch": items} if items is not None
                                                             else {})).loss)
        ours = loss_and_grads(lambda: answer_loss(NO_AUTOCAST, model, batch, num_items_in_batch=items))
        torch.testing.assert_close(ours[0], reference[0], rtol=1e-5, atol=1e-6)
        for mine, theirs in zip(ours[1], reference[1]):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_bf16_training_autocasts_the_answer_only_loss(make_spec, tiny_gguf, tiny_chat_dir, monkeypatch):
    """Accelerate autocasts only the wrapped model's forward; the answer-only loss calls the decoder itself, so
    it must enter the autocast itself, or `precision: bf16` silently trains in fp32."""
    from tunebench import hardware

    monkeypatch.setattr(hardware, "bf16_fast", lambda: True)
    spec = chat_spec(make_spec, tiny_gguf, tiny_chat_dir, {"strategy": "generative_lora", "precision": "bf16",
                                                           "epochs": 1, "batch_size": 4, "min_steps": None})
    setup = generative.Setup(spec)
    model = generative.build_model(spec)
    seen = []
    decoder = model.get_base_model().get_decoder()
    decoder.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    trainer, _, _ = generative.train_model(spec, model, setup.tokenizer, setup.train, setup.dev)
    assert trainer.args.bf16 and seen and all(seen)


def test_eager_attention_trains_the_same_adapters_as_sdpa(make_spec, tiny_gguf, tiny_chat_dir, tmp_path):
    """`attention: eager` on the model entry reaches the causal model and changes kernels, not mathematics;
    `auto` trains with eager on a CPU and answers the prompts with sdpa (its KV-cache kernels)."""
    method = {"strategy": "generative_lora", "epochs": 2, "batch_size": 8, "learning_rate": 3e-2, "logging_steps": 1,
              "precision": "fp32", "early_stopping_patience": None, "r": 8}
    losses, predictions = {}, {}
    for attention, trained, answered in (("sdpa", "sdpa", "sdpa"), ("eager", "eager", "eager"),
                                         ("auto", "eager", "sdpa")):
        spec = chat_spec(make_spec, tiny_gguf, tiny_chat_dir, method)
        spec.model_cfg = {**spec.model_cfg, "attention": attention}
        spec.run_dir = tmp_path / attention
        record = runner.execute(spec, tmp_path / f"{attention}.parquet", tmp_path / f"{attention}.json")
        assert (record["cost"]["attention"], record["cost"]["attention_inference"]) == (trained, answered)
        losses[attention] = record["cost"]["train_losses"]
        predictions[attention] = pl.read_parquet(tmp_path / f"{attention}.parquet")["prediction"].to_list()
    np.testing.assert_allclose(losses["eager"], losses["sdpa"], rtol=1e-3)
    assert losses["auto"] == losses["eager"]
    agree = np.mean([a == b for a, b in zip(predictions["auto"], predictions["eager"])])
    assert agree >= 0.9, agree


def test_auto_attention_is_eager_only_for_training_on_a_cpu(monkeypatch):
    from tunebench.modeling import loading

    entry = {"kind": "causal", "path": "x", "attention": "auto"}
    assert (loading.attention(entry, training=True), loading.attention(entry)) == ("eager", "sdpa")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loading.attention(entry, training=True) == "sdpa"
    assert loading.attention({**entry, "attention": "eager"}) == "eager"
    assert loading.attention({"kind": "causal", "path": "x"}, training=True) == "sdpa"
