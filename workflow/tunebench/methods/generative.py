"""Strategies `generative_lora` and `generative_qlora`: instruction fine-tuning of a generative model to write the
label (text → label word; for regression, the number with two decimals) — Fatemi & Hu's (2023) design, on
either family of model:
  seq2seq (T5 family)   the zero-shot prompt is the encoder input, the answer the decoder target;
  causal (decoder-only) the zero-shot prompt (as chat turns for instruction-tuned models) followed by the answer
                        and the end-of-turn token; the loss is on the answer tokens only.
LoRA adapters train on the frozen model — in bf16/fp32 (lora) or on a 4-bit NF4 copy of it (qlora, Dettmers
et al. 2023). Training is the shared Trainer recipe (tunebench.modeling.training) with the dev loss picking the
best epoch. Evaluation is the same as icl's: label scoring, free generation + parser, or both from one pass.
"""

from __future__ import annotations

import time

import polars as pl
import torch

from tunebench import families
from tunebench.evaluation import answers, metrics
from tunebench.modeling import adapters, lm, loading, prompts, scoring, training
from tunebench.spec import RunOutput, RunSpec

adapters.quiet_bitsandbytes()   # before peft imports bitsandbytes


def quantised(spec: RunSpec) -> bool:
    """Is the strategy's base 4-bit (its registry entry)?"""
    return families.strategy(spec.strategy).quantised


def base_model(spec: RunSpec, for_training: bool = True):
    """The frozen pretrained model: in fp32 (lora; mixed precision comes from autocast), or with 4-bit NF4
    linear layers (qlora) prepared for training adapters on top."""
    from peft import prepare_model_for_kbit_training

    cfg = spec.method_cfg
    if not quantised(spec):
        return loading.load_generative(spec.model_cfg, model_dir=spec.model_dir, training=for_training)
    quantization = training.quantization_config(cfg, skip_modules=["lm_head"])
    model = loading.load_generative(spec.model_cfg, quantization, model_dir=spec.model_dir, training=for_training)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    training.one_4bit_kernel(model)
    training.cache_dequantized_base(model, cfg["base_cache"])
    return model


def build_model(spec: RunSpec):
    """The frozen base model with fresh LoRA adapters."""
    from peft import TaskType, get_peft_model

    cfg = spec.method_cfg
    model = base_model(spec)
    torch.manual_seed(spec.seed)   # the adapters' initialisation
    task = TaskType.SEQ_2_SEQ_LM if spec.model_cfg["kind"] == "seq2seq" else TaskType.CAUSAL_LM
    lora = adapters.lora_config(cfg, model.config.model_type, task_type=task)
    return get_peft_model(model, lora)


def load_adapter(spec: RunSpec, adapter_dir):
    """A saved adapter on its base model (prepared exactly as for training), ready to predict: the round trip
    of `save_weights`."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model(spec, for_training=False), str(adapter_dir)).eval()


# --- data ---------------------------------------------------------------------------------------------------


class Examples:
    """Prompts and answers of a split as the model sees them: the zero-shot prompt (fitted to the context) and
    the target answer (the label word, or the number written with two decimals)."""

    def __init__(self, spec: RunSpec, tokenizer, fmt, words: dict | None):
        self.spec, self.tokenizer, self.fmt, self.words = spec, tokenizer, fmt, words
        self.kind, self.max_length = spec.model_cfg["kind"], spec.model_cfg["max_length"]
        self.count = lambda text: len(tokenizer(text, add_special_tokens=fmt.add_special_tokens)["input_ids"])

    def answers(self, split: pl.DataFrame) -> list[str]:
        if self.words:
            return [self.words[label] for label in split["label"]]
        return [prompts.format_number(v) for v in split["target"]]

    def prompts(self, split: pl.DataFrame, room: int = 0) -> list[prompts.FittedPrompt]:
        return [self.fit(text, room) for text in split["text"]]

    def fit(self, text: str, room: int | None = None) -> prompts.FittedPrompt:
        """The zero-shot prompt of `text`, cut to leave `room` tokens (default: the answer's) free."""
        room = self.answer_room() if room is None else room
        return prompts.fit_prompt(self.fmt, text, [], self.count, self.max_length - room)

    def answer_room(self) -> int:
        """Tokens kept free after a causal prompt for the answer (the longest label, or a generated number)."""
        if self.kind != "causal":
            return 0
        longest = max(len(lm.continuation_ids(self.tokenizer, self.fmt.render("x"), self.fmt.continuation(w),
                                              self.fmt.add_special_tokens)) for w in self.words.values()) \
            if self.words else 0
        return max(longest, self.spec.method_cfg["max_new_tokens"]) + 1

    def training_set(self, split: pl.DataFrame):
        """input_ids / labels: a seq2seq model reads the prompt and learns the answer as its decoder target; a
        causal model reads prompt + answer + end-of-turn and learns only the answer tokens (-100 elsewhere)."""
        from datasets import Dataset

        sources = [f.text for f in self.prompts(split, self.answer_room())]
        targets = self.answers(split)
        if self.kind == "seq2seq":
            enc = self.tokenizer(sources, truncation=True, max_length=self.max_length)
            enc["labels"] = self.tokenizer(text_target=targets, truncation=True, max_length=self.max_length)["input_ids"]
            return Dataset.from_dict(dict(enc))
        rows = {"input_ids": [], "attention_mask": [], "labels": []}
        for source, target in zip(sources, targets):
            prompt_ids = self.tokenizer(source, add_special_tokens=self.fmt.add_special_tokens)["input_ids"]
            answer = self.answer_tokens(source, target)
            rows["input_ids"].append(prompt_ids + answer)
            rows["attention_mask"].append([1] * (len(prompt_ids) + len(answer)))
            rows["labels"].append([-100] * len(prompt_ids) + answer)
        return Dataset.from_dict(rows)

    def answer_tokens(self, source: str, target: str) -> list[int]:
        """The answer's tokens after its prompt, ending with the end-of-turn (chat) or end-of-sequence token,
        so that the fine-tuned model learns to stop."""
        ids = lm.continuation_ids(self.tokenizer, source, self.fmt.continuation(target), self.fmt.add_special_tokens)
        eos = self.tokenizer.eos_token_id
        return ids + [eos] if eos is not None and eos not in ids else ids


# --- the run ------------------------------------------------------------------------------------------------


def collator(tokenizer, model):
    """Right-padded batches for training (positions count from the first token); -100 pads the labels."""
    from transformers import DataCollatorForSeq2Seq

    tokenizer.padding_side = "right"
    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)


# Decoder-only architectures whose logits are the output layer applied to the last hidden state, nothing more
# (no logit scaling or soft-capping): for these the loss may run the output layer on the answer positions alone.
PLAIN_CAUSAL_HEADS = ("llama", "mistral", "qwen2", "qwen3")


def answer_loss_trainer():
    """A Trainer whose causal-LM loss projects only the answer positions onto the vocabulary.

    The labels mask the prompt (-100), so the prompt's logits never reach the loss, yet the model's own forward
    projects every position onto the whole vocabulary — for SmolLM2 (49k words) a fifth of the multiply-adds of
    a training step, plus a float32 softmax over every position. The loss is the same: cross-entropy of the
    shifted answer tokens, summed over `num_items_in_batch` (the Trainer's count of labels[..., 1:] != -100)
    or averaged, as transformers' ForCausalLMLoss computes it; so are the gradients.
    Mixed precision: Accelerate autocasts the wrapped model's forward only, and this loss calls the decoder and
    the output layer directly, so it enters the accelerator's autocast itself (without it, `precision: bf16`
    trained in fp32).
    """
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            causal = model.get_base_model() if hasattr(model, "get_base_model") else model
            targets = inputs["labels"][:, 1:]
            answer = targets != -100
            with self.accelerator.autocast():
                hidden = causal.get_decoder()(input_ids=inputs["input_ids"],
                                              attention_mask=inputs["attention_mask"]).last_hidden_state
                logits = causal.get_output_embeddings()(hidden[:, :-1][answer]).float()
            loss = torch.nn.functional.cross_entropy(logits, targets[answer], reduction="sum")
            loss = loss / (num_items_in_batch if num_items_in_batch is not None else answer.sum())
            return (loss, {"logits": logits}) if return_outputs else loss

    return AnswerLossTrainer


def train_model(spec: RunSpec, model, tokenizer, train, dev, checkpoints: str = "checkpoints"):
    """The shared Trainer recipe; the dev loss (teacher-forced answers) picks the best epoch and stops early.
    Returns (trainer, train seconds, the checkpoint it resumed from or None)."""
    plain = spec.model_cfg["kind"] == "causal" and getattr(model.config, "model_type", None) in PLAIN_CAUSAL_HEADS
    return training.fit(model, train, dev, spec, collator(tokenizer, model), metric="loss", greater=False,
                        checkpoints=checkpoints, trainer_class=answer_loss_trainer() if plain else None)


def evaluate(spec: RunSpec, model, tokenizer, examples: Examples, rows: pl.DataFrame, decoding: str):
    """Score and/or generate the answers of `rows` as icl does (one pass; length-normalised label scores)."""
    cfg = spec.method_cfg
    answer_ids = lm.answer_token_ids(tokenizer, examples.fmt, examples.kind, examples.words)
    texts = [f.text for f in examples.prompts(rows, examples.answer_room())]
    precision = training.resolve_precision(cfg["precision"])
    model.eval()
    loading.use_attention(model, loading.attention(spec.model_cfg))   # `auto` trains eager, answers with sdpa
    def run_prompts(texts, ids=None, max_new_tokens=0):
        with lm.inference_autocast(precision):
            return lm.answer_prompts(model, tokenizer, texts, ids, max_new_tokens, cfg["eval_batch_size"],
                                     examples.fmt.add_special_tokens)

    result = run_prompts(texts, answer_ids if decoding != "generate" else None,
                         cfg["max_new_tokens"] if decoding != "score" else 0)
    label_scores = None
    if decoding != "generate":
        fmt, rule = examples.fmt, cfg["scoring"]
        label_scores, _ = scoring.label_scores(
            result.loglik, [fmt.continuation(w) for w in examples.words.values()], answer_ids, [rule],
            run_prompts=lambda more: run_prompts(more, answer_ids).loglik,
            render=lambda text, _: examples.fit(text).text,
            premise_prompt=prompts.premise_prompt(fmt, scoring.PMI_PREMISE))
        label_scores = label_scores.rule(rule)
    return answers.answer_columns(label_scores, result.generated, examples.words, decoding), result


def dev_score(spec: RunSpec, model, tokenizer, examples: Examples, dev: pl.DataFrame) -> float:
    """The dev metric of a trained model (by label scoring; by generation for regression): what picks the
    learning rate and what the did-it-learn check compares with the trivial baseline."""
    decoding = "score" if examples.words else "generate"
    columns, _ = evaluate(spec, model, tokenizer, examples, dev, decoding)
    metric = training.dev_metric(spec.task)[0]
    if examples.words:
        return metrics.classification_scalars(dev["label"].to_list(), columns["prediction"], spec.labels)[metric]
    penalty = spec.method_cfg["unparsed_penalty"]
    pred = [g - penalty if p is None else p for g, p in zip(dev["target"].to_list(), columns["prediction"])]
    return metrics.regression_scalars(dev["target"].to_list(), pred)[metric]


class Setup:
    """What a run and its learning-rate trials share: the tokenizer, the prompt builder, the training and dev sets."""

    def __init__(self, spec: RunSpec):
        from transformers import set_seed

        cfg = spec.method_cfg
        torch.set_num_threads(spec.threads)
        set_seed(spec.seed)
        classification = spec.task == "classification"
        self.decoding = cfg["decoding"] if classification else "generate"
        words = prompts.verbalizers(spec.labels, cfg["verbalizers"]) if classification else None
        self.template = prompts.Template.parse(cfg["template"], spec.task, list(words.values()) if words else None)
        self.tokenizer = loading.load_tokenizer(spec.model_cfg, spec.model_dir)
        fmt = prompts.prompt_format(self.template, self.tokenizer, spec.model_cfg)
        self.examples = Examples(spec, self.tokenizer, fmt, words)
        train_rows, self.dev_rows = spec.split("train"), spec.split("dev")
        if cfg["max_train_samples"] and cfg["max_train_samples"] < train_rows.height:
            train_rows = train_rows.sample(cfg["max_train_samples"], seed=spec.seed)
        # Scoring a dev prompt costs as much as a test prompt: trials, early stopping and the did-it-learn check
        # use one fixed sample of dev (the same rows for every seed and every learning rate).
        if cfg["max_dev_samples"] and cfg["max_dev_samples"] < self.dev_rows.height:
            self.dev_rows = self.dev_rows.sample(cfg["max_dev_samples"], seed=0).sort("id")
        self.train, self.dev = self.examples.training_set(train_rows), self.examples.training_set(self.dev_rows)

    def fit(self, spec: RunSpec):
        model = build_model(spec)
        return (model, *train_model(spec, model, self.tokenizer, self.train, self.dev))

    def trial(self, spec: RunSpec) -> float:
        model, trainer, seconds, _ = self.fit(spec)
        training.keep_trained(spec, model, trainer, seconds)
        return dev_score(spec, model, self.tokenizer, self.examples, self.dev_rows)


def select(spec: RunSpec) -> dict:
    """Rule tune_generative: the learning rate of `learning_rate_grid` best on dev (training.select_learning_rate)."""
    setup = Setup(spec)
    trial = training.per_seed(spec, lambda seed_spec: setup if seed_spec.seed == spec.seed else Setup(seed_spec))
    return training.select_learning_rate(spec, len(setup.train), trial)


def run(spec: RunSpec) -> RunOutput:
    setup = Setup(spec)
    cfg, examples = spec.method_cfg, setup.examples
    model, trainer, train_seconds, resumed = setup.fit(spec)
    trained_with = training.attention_implementation(model)
    dev = dev_score(spec, model, setup.tokenizer, examples, setup.dev_rows)

    test = spec.test_rows()
    t0 = time.perf_counter()
    columns, result = evaluate(spec, model, setup.tokenizer, examples, test, setup.decoding)
    eval_seconds = time.perf_counter() - t0
    train_tokens = sum(len(x) for x in setup.train["input_ids"]) + (
        sum(len(y) for y in setup.train["labels"]) if examples.kind == "seq2seq" else 0)
    info = training.cost_info(spec, model, trainer, train_seconds, eval_seconds, train_tokens, len(setup.train),
                              resumed)
    info.update(decoding=setup.decoding, scoring=cfg["scoring"] if setup.decoding != "generate" else None,
                learning_rate=spec.settings["learning_rate"], selection=spec.selection_trace,
                template=type(examples.fmt).__name__, prompt_template=setup.template.header + setup.template.block,
                tokens_run_eval=result.prompt_tokens, best_dev_metric=dev, dev_metric=training.dev_metric(spec.task)[0],
                best_dev_loss=trainer.state.best_metric, dev_rows_scored=setup.dev_rows.height,
                quantization=f"4bit-{cfg['quant_type']}" if quantised(spec) else None,
                model_source=loading.model_source(spec.model_cfg, spec.model_dir),
                attention=trained_with, attention_inference=training.attention_implementation(model))
    if quantised(spec):
        info.update(linear4bit_modules=training.count_4bit_modules(model), qlora_path=training.qlora_path(model))
    if cfg["save_weights"]:
        model.save_pretrained(spec.run_dir / "adapter")   # safetensors; load with load_adapter()
    training.drop_checkpoints(spec)
    predictions = pl.DataFrame({"id": test["id"], **columns},
                               schema_overrides={"prediction": pl.String if spec.task == "classification"
                                                 else pl.Float64})
    return RunOutput(predictions, info)
