"""LoRA settings reach peft under peft's names (ours kept as deprecated aliases), target_modules defaults to
peft's per-architecture choice (so a DistilBERT trains with LoRA as given), and bitsandbytes' hub-kernel warning
becomes one line that says what it means."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import polars as pl
import pytest

from conftest import REPO
from test_encoder import resolved, synthetic_table
from tiny_models import build_tiny_distilbert
from tunebench import config as tbconfig
from tunebench.modeling import adapters


def lora_method(**keys) -> dict:
    return resolved({"strategy": "lora", **keys})["methods"]["m"]


def test_peft_names_pass_through_to_loraconfig():
    cfg = lora_method(r=4, lora_alpha=8, lora_dropout=0.2, bias="lora_only", use_rslora=True,
                      modules_to_save=["extra"], target_modules=["query"], layers_to_transform=[1])
    lora = adapters.lora_config(cfg, "bert", modules_to_save=["classifier"])
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.bias, lora.use_rslora) == (4, 8, 0.2, "lora_only", True)
    assert lora.target_modules == {"query"} and lora.layers_to_transform == [1]
    assert lora.modules_to_save == ["classifier", "extra"]   # the head always trains; the method's come after


def test_target_modules_default_to_peft_choice_for_the_architecture():
    cfg = lora_method()
    assert cfg["target_modules"] is None
    assert adapters.lora_config(cfg, "bert").target_modules == {"query", "value"}
    assert adapters.lora_config(cfg, "deberta-v2").target_modules == {"query_proj", "value_proj"}   # peft's table
    assert adapters.lora_config(cfg, "distilbert").target_modules == {"q_lin", "v_lin"}            # ours
    with pytest.raises(adapters.AdapterConfigError, match="model type 'no-such-arch'.*target_modules"):
        adapters.lora_config(cfg, "no-such-arch")


def test_old_names_are_read_as_peft_names_with_a_deprecation_warning():
    with pytest.warns(FutureWarning, match=r"methods\.m\.alpha' is deprecated: write 'lora_alpha'"):
        cfg = lora_method(alpha=32, dropout=0.0)
    assert (cfg["lora_alpha"], cfg["lora_dropout"]) == (32, 0.0) and "alpha" not in cfg and "dropout" not in cfg
    with pytest.raises(tbconfig.ConfigError, match="'alpha' is the old name of 'lora_alpha', and both are given"):
        lora_method(alpha=32, lora_alpha=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # peft's names warn of nothing
        lora_method(lora_alpha=32)


@pytest.fixture(scope="module")
def distilbert_workspace(tmp_path_factory):
    from tunebench.modeling.tokenize import tokenize_table

    root = tmp_path_factory.mktemp("distilbert")
    corpus = [" ".join(synthetic_table()["text"].to_list()[:60])] * 3
    model_path = build_tiny_distilbert(root / "distilbert", corpus=corpus)
    synthetic_table().write_parquet(root / "table.parquet")
    model_cfg = resolved({"strategy": "lora"}, model={"kind": "encoder", "path": str(model_path), "max_length": 32,
                                                     "pooling": "mean"})["models"]["m"]
    tokenize_table(root / "table.parquet", model_cfg, root / "tokenized")
    return root, model_cfg


def test_a_distilbert_encoder_trains_lora_with_default_settings(distilbert_workspace, tmp_path):
    """DistilBERT names its attention q_lin/v_lin, not BERT's query/value: the default targets follow the
    architecture. Only the run's length and rate are set; every LoRA key is the schema's default."""
    from tunebench.methods.encoder import build_model
    from tunebench.runner import execute
    from tunebench.spec import RunSpec

    root, model_cfg = distilbert_workspace
    cfg = resolved({"strategy": "lora", "epochs": 3, "learning_rate": 5e-3, "batch_size": 16,
                    "early_stopping_patience": None, "precision": "fp32", "logging_steps": 1})
    config = {"datasets": cfg["datasets"], "models": {"tiny-distilbert": model_cfg}, "methods": {"lora": cfg["methods"]["m"]}}
    spec = RunSpec.from_config(config, "d", "tiny-distilbert", "lora", run_dir=tmp_path / "run",
                               inputs={"table": str(root / "table.parquet"), "tokenized": str(root / "tokenized"),
                                       "features": str(root / "mean.npz")})
    trainable = {n for n, p in build_model(spec).named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    assert lora and all(".q_lin." in n or ".v_lin." in n for n in lora)
    assert any(".q_lin." in n for n in lora) and any(".v_lin." in n for n in lora)
    record = execute(spec, tmp_path / "predictions.parquet", tmp_path / "metrics.json")
    losses = record["cost"]["train_losses"]
    assert losses[-1] < losses[0], losses
    assert pl.read_parquet(tmp_path / "predictions.parquet").height == 24


def test_the_bitsandbytes_hub_kernel_warning_becomes_one_explanation(caplog):
    adapters.quiet_bitsandbytes()
    adapters.quiet_bitsandbytes()   # twice: still one filter, one line
    logger = logging.getLogger(adapters.BNB_CPU_LOGGER)
    with caplog.at_level(logging.WARNING, logger=adapters.BNB_CPU_LOGGER):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                       "already `pip install kernels`", "Set trust_remote_code=True")
        logger.warning("some other warning")
        logging.getLogger(adapters.KERNELS_LOGGER).warning(
            "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' because Hugging Face "
            "Hub is in offline mode.")
    assert [r.getMessage() for r in caplog.records] == [adapters.BNB_EXPLANATION, "some other warning"]


def test_importing_the_adapter_methods_then_bitsandbytes_prints_no_trust_remote_code_advice():
    """Where bitsandbytes tries the hub kernel (CPUs with AVX-512 BF16) the explanation is printed once instead;
    elsewhere nothing is. (HF_HUB_OFFLINE=1 changes the words: the unit test above covers that case.)"""
    code = "import tunebench.methods.encoder, tunebench.methods.generative, peft, bitsandbytes"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO / "workflow"), "HF_HUB_OFFLINE": "",
                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for advice in ("Failed to load CPU gemm_4bit_forward", "trust_remote_code", "publisher trust"):
        assert advice not in proc.stderr
    assert proc.stderr.count(adapters.BNB_EXPLANATION) <= 1
    assert proc.stderr.count(adapters.BNB_EXPLANATION) <= 1
