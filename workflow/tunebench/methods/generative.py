"""Strategies `generative_lora` and `generative_qlora`: text-to-label fine-tuning of a T5-family model.

The model learns to write the label word (or, for regression, the number with two decimals) after the
zero-shot prompt, training LoRA adapters on the frozen model — in bf16/fp32 (lora) or on a 4-bit NF4 copy
(qlora, Dettmers et al. 2023; as in Fatemi & Hu 2023). Evaluation uses the same decoding modes as `icl`:
  score     log-likelihood of each label word, argmax (nothing unparseable),
  generate  greedy answer + parser (unparsed answers counted wrong / charged `unparsed_penalty`),
  both      predictions by scoring; the generated answers are kept and their metrics reported as generate_*.
Regression always generates. Training resumes from the last checkpoint in the run folder.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import polars as pl
import torch

from tunebench.evaluation import answers, metrics
from tunebench.modeling import lm, prompts
from tunebench.methods.encoder import checkpoint_dir, last_checkpoint, use_bf16
from tunebench.modeling.loading import count_parameters
from tunebench.runner import RunOutput, RunSpec


def quantization_config(cfg: dict):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg["quant_type"],
                              bnb_4bit_use_double_quant=cfg["double_quant"],
                              bnb_4bit_compute_dtype=getattr(torch, cfg["compute_dtype"]))


def build_model(spec: RunSpec):
    """The frozen base model (4-bit for qlora) with fresh LoRA adapters."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    cfg = spec.method_cfg
    if spec.strategy == "generative_qlora":
        model = lm.load_model(spec.model_cfg, quantization_config(cfg))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = lm.load_model(spec.model_cfg, dtype=torch.float32)   # mixed precision comes from autocast
    torch.manual_seed(spec.seed)   # the adapters' initialisation
    lora = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=cfg["r"], lora_alpha=cfg["alpha"],
                      lora_dropout=cfg["dropout"], target_modules=list(cfg["target_modules"]))
    return get_peft_model(model, lora)


def load_adapter(model_cfg: dict, adapter_dir, quantization=None):
    """A saved adapter on its base model, ready to predict (the round trip of `save_weights`)."""
    from peft import PeftModel

    base = lm.load_model(model_cfg, quantization, dtype=None if quantization else torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


# --- data ---------------------------------------------------------------------------------------------------


def examples(spec: RunSpec, split: pl.DataFrame, tokenizer, template: prompts.Template,
             words: dict | None) -> tuple[list[str], list[str]]:
    """(prompts cut to max_length, target answers) of a split."""
    count = lm.token_counter(tokenizer)
    sources = [prompts.fit_prompt(template, t, [], count, spec.model_cfg["max_length"]).text
               for t in split["text"]]
    if words:
        targets = [words[label] for label in split["label"]]
    else:
        targets = [prompts.format_number(v) for v in split["target"]]
    return sources, targets


def training_set(tokenizer, sources: list[str], targets: list[str], max_length: int):
    from datasets import Dataset

    enc = tokenizer(sources, truncation=True, max_length=max_length)
    enc["labels"] = tokenizer(text_target=targets, truncation=True, max_length=max_length)["input_ids"]
    return Dataset.from_dict(dict(enc))


def train(spec: RunSpec, model, tokenizer, dataset):
    """Trainer with warmup + linear decay, dynamic padding, resume. Returns (trainer, seconds)."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    cfg = spec.method_cfg
    out = checkpoint_dir(spec)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"],
        num_train_epochs=cfg["epochs"], warmup_steps=cfg["warmup_ratio"],   # float < 1: a fraction of steps
        weight_decay=cfg["weight_decay"], lr_scheduler_type="linear", save_strategy="epoch", save_total_limit=1,
        bf16=use_bf16(cfg["precision"]), use_cpu=not torch.cuda.is_available(), seed=spec.seed,
        data_seed=spec.seed, logging_steps=cfg["logging_steps"], report_to="none", dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100))
    resume = last_checkpoint(out)
    if resume:
        print(f"resuming from {resume}")
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    return trainer, time.perf_counter() - t0


# --- evaluation ---------------------------------------------------------------------------------------------


def predict(spec: RunSpec, model, tokenizer, sources: list[str], words: dict | None) -> tuple[dict, dict]:
    """(prediction columns, extra metrics) for the test prompts, by the configured decoding."""
    cfg = spec.method_cfg
    batch, max_length = cfg["eval_batch_size"], spec.model_cfg["max_length"]
    decoding = cfg["decoding"] if words else "generate"
    columns, extra = {}, {}
    if decoding in ("score", "both"):
        labels = list(words)
        probs = lm.probabilities(lm.score_labels(model, tokenizer, sources, [words[x] for x in labels], batch,
                                                 max_length))
        columns["prediction"] = [labels[i] for i in probs.argmax(1)]
        columns.update({f"score_{lab}": probs[:, j] for j, lab in enumerate(labels)})
    if decoding in ("generate", "both"):
        generated = lm.generate(model, tokenizer, sources, cfg["max_new_tokens"], batch, max_length)
        if words:
            parsed = [answers.parse_label(a, words) for a in generated]
        else:
            parsed = [answers.parse_number(a) for a in generated]
            extra["coverage"] = sum(p is not None for p in parsed) / max(len(parsed), 1)
        columns["answer"] = generated
        if decoding == "generate":
            columns.update(prediction=parsed, unparsed=[p is None for p in parsed])
        else:
            columns["generated_prediction"] = parsed
    return columns, extra


def generation_metrics(gold: list[str], parsed: list[str | None], labels: list[str]) -> dict:
    """decoding both: how free generation fares beside label scoring (unparsed answers count wrong)."""
    pred = ["<unparsed>" if p is None else p for p in parsed]
    scores = metrics.classification_scalars(gold, pred, labels)
    scores["unparseable_rate"] = sum(p is None for p in parsed) / max(len(parsed), 1)
    return {f"generate_{k}": v for k, v in scores.items()}


def run(spec: RunSpec) -> RunOutput:
    from transformers import set_seed

    cfg = spec.method_cfg
    torch.set_num_threads(spec.threads)
    set_seed(spec.seed)
    classification = spec.task == "classification"
    words = prompts.verbalizers(spec.labels, cfg["verbalizers"]) if classification else None
    template = prompts.Template.parse(cfg["template"], spec.task, list(words.values()) if words else None)
    tokenizer = lm.load_tokenizer(spec.model_cfg)

    train_rows = spec.split("train")
    if cfg["max_train_samples"] and cfg["max_train_samples"] < train_rows.height:
        train_rows = train_rows.sample(cfg["max_train_samples"], seed=spec.seed)
    dataset = training_set(tokenizer, *examples(spec, train_rows, tokenizer, template, words),
                           spec.model_cfg["max_length"])
    model = build_model(spec)
    trainer, train_seconds = train(spec, model, tokenizer, dataset)
    model.eval()

    test = spec.split("test")
    sources, _ = examples(spec, test, tokenizer, template, words)
    t0 = time.perf_counter()
    columns, extra = predict(spec, model, tokenizer, sources, words)
    eval_seconds = time.perf_counter() - t0
    if "generated_prediction" in columns:
        extra.update(generation_metrics(test["label"].to_list(), columns["generated_prediction"], spec.labels))

    trainable, total = count_parameters(model)
    train_tokens = sum(len(x) + len(y) for x, y in zip(dataset["input_ids"], dataset["labels"]))
    epochs = float(trainer.state.epoch or 0)
    info = {
        "trainable_params": trainable, "total_params": total,
        "trainable_fraction": trainable / total if total else None,
        "train_time_s": train_seconds, "eval_time_s": eval_seconds, "epochs_run": epochs,
        "train_rows": len(dataset), "tokens_per_s": train_tokens * epochs / train_seconds if train_seconds else None,
        "final_train_loss": trainer.state.log_history[-1].get("train_loss") if trainer.state.log_history else None,
        "device": str(model.device), "precision": "bf16" if trainer.args.bf16 else "fp32",
        "quantization": f"4bit-{cfg['quant_type']}" if spec.strategy == "generative_qlora" else None,
        "decoding": cfg["decoding"] if classification else "generate",
    }
    if torch.cuda.is_available():
        info["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if cfg["save_weights"]:
        model.save_pretrained(spec.run_dir / "adapter")   # safetensors; load with load_adapter()
    shutil.rmtree(Path(trainer.args.output_dir), ignore_errors=True)   # checkpoints only served resuming
    predictions = pl.DataFrame({"id": test["id"], **columns},
                               schema_overrides={"prediction": pl.String if classification else pl.Float64})
    return RunOutput(predictions, info, extra)
