"""In-context learning: answer parsers, templates, demonstration selection, prompt truncation, label scoring
against per-example references, and whole runs on a tiny T5 and a tiny Llama in both decoding modes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
from tunebench.evaluation import answers
from tunebench.methods import icl
from tunebench.modeling import lm, loading, prompts
from tunebench import runner
from tunebench import config as tbconfig
from tiny_models import WordTokenizer, cacheless_output

LABELS = ["negative", "neutral", "positive"]
WORDS = {label: label for label in LABELS}


# --- parsers ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("positive", "positive"),
    ("Positive.", "positive"),
    ("  NEGATIVE\n", "negative"),
    ("The sentiment is neutral", "neutral"),
    ("negative, not positive", "negative"),        # the answer starts with a label word
    ("It is positive rather than negative", None),  # two different labels and no leading one: ambiguous
    ("nonnegative", None),                          # label words inside other words do not count
    ("non-negative outlook", None),
    ("positively", None),
    ("negatively impacted but neutral", "neutral"),  # only whole words are label words
    ("I cannot tell.", None),
    ("", None),
    ("   ", None),
    (None, None),
])
def test_parse_label(text, expected):
    assert answers.parse_label(text, WORDS) == expected


def test_parse_label_uses_the_verbalizers():
    words = {"bearish": "down", "bullish": "up", "neutral": "flat"}
    assert answers.parse_label("Up", words) == "bullish"
    assert answers.parse_label("upbeat", words) is None
    assert answers.parse_label("very much down", {"bearish": "very much down", "bullish": "up"}) == "bearish"


@pytest.mark.parametrize("text, expected", [
    ("0.5", 0.5),
    ("-0.43", -0.43),
    ("Score: -0.25.", -0.25),
    ("+0.3", 0.3),
    ("-.5", -0.5),
    ("\u22120.7", -0.7),            # Unicode minus sign
    ("1", 1.0),
    ("-1.0 (very negative)", -1.0),
    ("2e-1", 0.2),
    ("Q3 sales: -0.2", -0.2),       # a digit inside a word is not the answer
    ("about .75", 0.75),
    ("negative", None),
    ("", None),
    (None, None),
])
def test_parse_number(text, expected):
    value = answers.parse_number(text)
    assert value == pytest.approx(expected) if expected is not None else value is None


# --- templates and verbalisers ------------------------------------------------------------------------------

def test_default_template_renders_demonstrations_like_the_query():
    template = prompts.Template.parse(None, "classification", LABELS)
    prompt = template.render("profits {up}", [("shares fell", "negative"), ("sales rose", "positive")])
    assert prompt == ("Classify the sentiment of the financial text as negative, neutral or positive. "
                      "Answer with one word.\n\n"
                      "Text: shares fell\nAnswer: negative\n\n"
                      "Text: sales rose\nAnswer: positive\n\n"
                      "Text: profits {up}\nAnswer:")


def test_template_without_demonstration_slot():
    template = prompts.Template.parse("Sentiment of: {text}", "classification", LABELS)
    assert template.render("x") == "Sentiment of: x"
    with pytest.raises(ValueError, match="demonstrations"):
        template.render("x", [("y", "positive")])
    with pytest.raises(ValueError, match="text"):
        prompts.Template.parse("no slot", "classification", LABELS)
    with pytest.raises(ValueError, match="must come after"):
        prompts.Template.parse("{text} then {demonstrations}", "classification", LABELS)


def test_verbalizers():
    assert prompts.verbalizers(LABELS, {"neutral": "mixed"}) == {**WORDS, "neutral": "mixed"}
    with pytest.raises(ValueError, match="unknown labels"):
        prompts.verbalizers(LABELS, {"bullish": "up"})
    with pytest.raises(ValueError, match="distinct"):
        prompts.verbalizers(LABELS, {"neutral": "positive"})


# --- demonstration selection --------------------------------------------------------------------------------

def test_random_selection_is_seeded():
    a = prompts.random_demonstrations(50, 20, 5, seed=0)
    assert a == prompts.random_demonstrations(50, 20, 5, seed=0)
    assert a != prompts.random_demonstrations(50, 20, 5, seed=1)
    assert all(len(set(d)) == 5 for d in a) and len({tuple(d) for d in a}) > 1   # a fresh draw per query


def test_balanced_selection_spreads_over_classes():
    strata = ["a"] * 30 + ["b"] * 5 + ["c"] * 10
    draws = prompts.balanced_demonstrations(strata, 40, 6, seed=3)
    assert draws == prompts.balanced_demonstrations(strata, 40, 6, seed=3)
    assert draws != prompts.balanced_demonstrations(strata, 40, 6, seed=4)
    for d in draws:
        assert sorted(strata[i] for i in d) == ["a", "a", "b", "b", "c", "c"]
    for d in prompts.balanced_demonstrations(strata, 40, 4, seed=0):
        counts = [sum(strata[i] == s for i in d) for s in "abc"]
        assert sum(counts) == 4 and max(counts) - min(counts) == 1
    assert len({tuple(strata[i] for i in d) for d in draws}) > 1   # order shuffled, not class-sorted


def test_regression_strata_are_terciles():
    strata = prompts.regression_strata(np.linspace(-1, 1, 30))
    assert np.bincount(strata).tolist() == [10, 10, 10]


def test_similar_selection_ranks_by_cosine():
    train = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [10, 10, 0], [0, 0, 1]], dtype=np.float32)
    query = np.array([[2, 0, 0], [0, 0.1, 1]], dtype=np.float32)
    # Least similar first, the nearest next to the query. Row 3 has the largest dot product with the first
    # query but a lower cosine than rows 0 and 1.
    assert prompts.similar_demonstrations(query, train, 3) == [[3, 1, 0], [3, 2, 4]]
    assert prompts.similar_demonstrations(query, train, 1) == [[0], [4]]


def test_similar_selection_in_a_run_picks_same_class_examples(make_spec, tiny_t5, tmp_path):
    spec = make_spec({"kind": "seq2seq", "path": str(tiny_t5)}, {"strategy": "icl", "k": 3})
    # The retriever's embeddings are given below; config validation (which wants an encoder entry) is not the point.
    spec.method_cfg = {**spec.method_cfg, "selection": "similar", "retriever": "encoder"}
    table = spec.table()
    # Embeddings that put each sentence kind in its own direction (plus noise), as a sentence encoder would.
    rng = np.random.default_rng(0)
    kinds = sorted({t.rstrip("0123456789 ") for t in table["text"]})
    vectors = np.stack([np.eye(len(kinds))[kinds.index(t.rstrip("0123456789 "))] for t in table["text"]])
    np.savez(tmp_path / "emb.npz", ids=np.asarray(table["id"].to_list()),
             features=(vectors + 0.01 * rng.standard_normal(vectors.shape)).astype(np.float32))
    spec.embeddings_path = str(tmp_path / "emb.npz")
    train, test = spec.split("train"), spec.split("test")
    chosen = icl.select_demonstrations(spec, train, test)
    for label, idx in zip(test["label"], chosen):
        assert [train["label"][i] for i in idx] == [label] * 3
    spec.embeddings_path = None
    with pytest.raises(ValueError, match="retriever"):
        icl.select_demonstrations(spec, train, test)


# --- fitting prompts into the context -----------------------------------------------------------------------

def test_fit_prompt_drops_demonstrations_first():
    template = prompts.Template.parse(None, "classification", LABELS)
    demos = [(f"demo number {i} text", "neutral") for i in range(4)]
    count = lambda s: len(s.split())   # noqa: E731 — one 'token' per word
    full = template.render("the query", demos)
    assert prompts.fit_prompt(template, "the query", demos, count, 1000).n_demonstrations == 4
    fitted = prompts.fit_prompt(template, "the query", demos, count, count(full) - 1)
    assert fitted.n_demonstrations == 3 and fitted.text == template.render("the query", demos[1:])
    assert fitted.tokens <= count(full) - 1 and not fitted.query_truncated
    # No room for any demonstration, then not even for the whole query: the query's text is cut.
    bare = count(template.render(""))
    fitted = prompts.fit_prompt(template, "one two three four five", demos, count, bare + 2)
    assert fitted.n_demonstrations == 0 and fitted.query_truncated
    assert fitted.text == template.render("one two") and fitted.tokens == bare + 2
    with pytest.raises(ValueError, match="template alone"):
        prompts.fit_prompt(template, "x", demos, count, bare - 1)


def test_icl_run_records_how_many_demonstrations_fit(make_spec, tiny_t5, tmp_path):
    spec = make_spec({"kind": "seq2seq", "path": str(tiny_t5), "max_length": 48}, {"strategy": "icl", "k": 4})
    out = icl.run(spec)
    shots = out.predictions["n_demonstrations"]
    assert shots.max() < 4 and out.info["demonstrations_min"] == shots.min()
    assert out.info["demonstrations_mean"] == pytest.approx(shots.mean())
    assert out.info["prompt_tokens_max"] <= 48
    roomy = make_spec({"kind": "seq2seq", "path": str(tiny_t5), "max_length": 512}, {"strategy": "icl", "k": 4})
    assert icl.run(roomy).info["demonstrations_min"] == 4


# --- label scoring and generation against per-example references --------------------------------------------

PROMPTS = ["Text: profits surge as sales rise\nAnswer:", "Text: shares plunge after the company warns on "
           "losses and the board will meet on tuesday\nAnswer:", "Text: the board will meet\nAnswer:"]
ANSWERS = ["positive", "very negative", "neutral and flat"]   # multi-token answers of different lengths
# Prompts with a long common prefix (an instruction and shared demonstrations), as a k-shot run has.
SHARED = "Classify the sentiment.\n\nText: profits rose\nAnswer: positive\n\nText: shares fell\nAnswer: negative\n\n"
SHARED_PROMPTS = [SHARED + p for p in PROMPTS] + [SHARED + "Text: sales\nAnswer:"]


def test_seq2seq_scoring_matches_per_example_loss(tiny_t5):
    cfg = {"kind": "seq2seq", "path": str(tiny_t5)}
    tokenizer, model = loading.load_tokenizer(cfg), loading.load_generative(cfg)
    result = lm.answer_prompts(model, tokenizer, PROMPTS, [lm.seq2seq_answer_ids(tokenizer, a) for a in ANSWERS],
                               batch_size=2)
    for i, prompt in enumerate(PROMPTS):
        for j, answer in enumerate(ANSWERS):
            target = tokenizer(text_target=answer, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                loss = model(**tokenizer(prompt, return_tensors="pt"), labels=target).loss
            assert result.loglik[i, j] == pytest.approx(-loss.item() * target.shape[1], abs=1e-4)
            assert result.loglik_mean[i, j] == pytest.approx(-loss.item(), abs=1e-4)


def reference_loglik(model, prompt_ids: list[int], answer_ids: list[int]) -> float:
    """log p(answer | prompt) from one plain forward pass over prompt + answer (no cache, no batching)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt_ids + answer_ids])).logits[0].float(), -1)
    return sum(logp[len(prompt_ids) - 1 + t, tok].item() for t, tok in enumerate(answer_ids))


# Two groups interleaved, each with a prefix of its own (a text and its content-free prompts, demonstrations
# drawn for that text alone).
GROUPED_PROMPTS = [p.replace("sentiment.", "sentiment of the text.") if i % 2 else p for i, p in enumerate(SHARED_PROMPTS)]
GROUPS = [i % 2 for i in range(len(GROUPED_PROMPTS))]


@pytest.mark.parametrize("prompt_list, groups", [(PROMPTS, None), (SHARED_PROMPTS, None),
                                                 (GROUPED_PROMPTS, GROUPS)], ids=["short", "shared-prefix", "groups"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_cached_causal_scoring_equals_uncached_scoring(tiny_llama, prompt_list, groups, batch_size):
    """The shared-prefix cache (one per group), left padding between prefix and prompt, and multi-token answers
    continued from the cache (then cropped) give the same log-likelihoods as a plain pass over each prompt +
    answer."""
    cfg = {"kind": "causal", "path": str(tiny_llama)}
    tokenizer, model = loading.load_tokenizer(cfg), loading.load_generative(cfg)
    answer_ids = [lm.continuation_ids(tokenizer, prompt_list[0], " " + a, True) for a in ANSWERS]
    result = lm.answer_prompts(model, tokenizer, prompt_list, answer_ids, batch_size=batch_size, groups=groups)
    if prompt_list is not PROMPTS:
        assert result.shared_prefix_tokens > 20
    if groups:   # each group's prefix is longer than the prefix common to all prompts
        ungrouped = lm.answer_prompts(model, tokenizer, prompt_list, answer_ids, batch_size=batch_size)
        assert result.shared_prefix_tokens > ungrouped.shared_prefix_tokens
    for i, prompt in enumerate(prompt_list):
        for j, answer in enumerate(answer_ids):
            expected = reference_loglik(model, tokenizer(prompt)["input_ids"], answer)
            assert result.loglik[i, j] == pytest.approx(expected, abs=1e-4)
            assert result.loglik_mean[i, j] == pytest.approx(expected / len(answer), abs=1e-4)
    assert len({len(a) for a in answer_ids}) > 1


def test_cached_greedy_generation_equals_generate_one_prompt_at_a_time(tiny_llama):
    cfg = {"kind": "causal", "path": str(tiny_llama)}
    tokenizer, model = loading.load_tokenizer(cfg), loading.load_generative(cfg)
    result = lm.answer_prompts(model, tokenizer, SHARED_PROMPTS, max_new_tokens=5, batch_size=3)
    for prompt, answer in zip(SHARED_PROMPTS, result.generated):
        enc = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)
        out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        assert answer == expected.strip().split("\n\n")[0]


class BigramLM(torch.nn.Module):
    """A causal 'model' whose next-token distribution depends on the last token only: a constructed case in
    which we set every answer token's probability by hand. It keeps no cache (a bigram needs none)."""

    def __init__(self, table: dict[int, dict[int, float]], vocab: int):
        from transformers import LlamaConfig

        super().__init__()
        self.config = LlamaConfig(vocab_size=vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=1)
        self.logits_after = torch.full((vocab, vocab), -30.0)
        for prev, nxt in table.items():
            rest = 1 - sum(nxt.values())
            self.logits_after[prev] = torch.log(torch.tensor([nxt.get(t, rest / (vocab - len(nxt)))
                                                              for t in range(vocab)]))

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None, logits_to_keep=0,
                cache=None):
        return cacheless_output(self.logits_after[input_ids], logits_to_keep, cache)


def test_a_labels_token_count_does_not_decide_its_score():
    """Label A is one token with p = 0.30; label B is three tokens, each p = 0.37. Summed log-likelihood would
    prefer A only because B has more tokens (-1.2 vs -3.0); the length-normalised score prefers B (-1.2 vs
    -1.0), as it does when B is written as one token with the same probability."""
    tok = WordTokenizer(["<pad>", "text", "is", "A", "B1", "B2", "B3", "B"])
    ids = tok.ids
    table = {ids["is"]: {ids["A"]: np.exp(-1.2), ids["B1"]: np.exp(-1.0), ids["B"]: np.exp(-1.0) * 0.5},
             ids["B1"]: {ids["B2"]: np.exp(-1.0)}, ids["B2"]: {ids["B3"]: np.exp(-1.0)}}
    model = BigramLM(table, len(ids))
    three = lm.answer_prompts(model, tok, ["text is", "text text is"], [[ids["A"]], [ids["B1"], ids["B2"], ids["B3"]]])
    assert np.allclose(three.loglik, [[-1.2, -3.0]] * 2, atol=1e-5)          # the sum would pick A ...
    columns = answers.answer_columns(three.loglik_mean, None, {"a": "A", "b": "B"}, "score")
    assert columns["prediction"] == ["b", "b"]                                # ... the normalised score picks B
    table[ids["is"]][ids["B"]] = np.exp(-1.0)
    model = BigramLM({**table, ids["is"]: {ids["A"]: np.exp(-1.2), ids["B"]: np.exp(-1.0)}}, len(ids))
    one = lm.answer_prompts(model, tok, ["text is", "text text is"], [[ids["A"]], [ids["B"]]])
    assert answers.answer_columns(one.loglik_mean, None, {"a": "A", "b": "B"}, "score")["prediction"] == ["b", "b"]


# --- whole runs -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
@pytest.mark.parametrize("decoding", ["score", "generate", "both"])
def test_icl_run(kind, decoding, make_spec, tiny_t5, tiny_llama, tmp_path):
    path = tiny_t5 if kind == "seq2seq" else tiny_llama
    spec = make_spec({"kind": kind, "path": str(path), "max_length": 128},
                     {"strategy": "icl", "k": 3, "selection": "balanced", "decoding": decoding})
    record = runner.execute(spec, tmp_path / "predictions.parquet", tmp_path / "metrics.json")
    preds = pl.read_parquet(tmp_path / "predictions.parquet")
    assert preds.height == spec.split("test").height == record["metrics"]["n_test"]
    assert record["cost"]["demonstrations_min"] == 3 and record["cost"]["eval_time_s"] > 0
    assert record["cost"]["total_params"] > 0 and record["cost"]["device"] == "cpu"
    assert len(record["cost"]["demonstration_ids"]) == 3          # one shared draw, recorded
    if kind == "causal":   # the instruction and the shared demonstrations run once
        assert record["cost"]["shared_prefix_tokens"] > 20
        assert record["cost"]["tokens_run"] < record["cost"]["prompt_tokens_total"]
    if decoding != "generate":
        probs = preds.select(f"score_{x}" for x in LABELS).to_numpy()
        assert np.allclose(probs.sum(1), 1)
        assert preds["prediction"].to_list() == [LABELS[i] for i in probs.argmax(1)]
        assert "unparseable_rate" not in record["metrics"]
    if decoding == "generate":
        assert preds["unparsed"].to_list() == preds["prediction"].is_null().to_list()
        assert record["metrics"]["unparseable_rate"] == pytest.approx(preds["unparsed"].mean())
    if decoding == "both":   # the generated answers of the same pass, scored on their own
        generated = record["metrics"]["generate"]
        assert generated["unparseable_rate"] == pytest.approx(preds["generated_prediction"].is_null().mean())
        assert {"accuracy", "macro_f1", "as_neutral_macro_f1", "dropped_n"} <= set(generated)


def test_generated_answers_are_parsed_and_unparsed_count_wrong(make_spec, tiny_t5, tmp_path, monkeypatch):
    canned = ["Positive.", "negative", "non-negative", "", "The answer is neutral", "positive or negative",
              "neutral", "nonsense", "positive"]
    monkeypatch.setattr(lm, "answer_prompts", lambda model, tok, texts, *a, **k: lm.Answers(
        None, None, canned[:len(texts)], 0, 0))
    spec = make_spec({"kind": "seq2seq", "path": str(tiny_t5)}, {"strategy": "icl", "decoding": "generate"})
    record = runner.execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    preds = pl.read_parquet(tmp_path / "p.parquet")
    assert preds["prediction"].to_list() == ["positive", "negative", None, None, "neutral", "positive",
                                             "neutral", None, "positive"]
    assert record["metrics"]["unparseable_rate"] == pytest.approx(3 / 9)
    correct = sum(p == g for p, g in zip(preds["prediction"], preds["gold"]))
    assert record["metrics"]["accuracy"] == pytest.approx(correct / 9)
    assert record["metrics"]["confusion_matrix"]["matrix"] and sum(map(sum, record["metrics"]["confusion_matrix"]
                                                                       ["matrix"])) == 9 - 3


def test_regression_generates_signed_numbers_and_charges_unparsed(make_spec, tiny_t5, tmp_path, monkeypatch):
    canned = ["0.8", "-0.6", "+.1", "", "about -0.5", "n/a", "0.7", "-0.65", "0.05"]
    monkeypatch.setattr(lm, "answer_prompts", lambda model, tok, texts, *a, **k: lm.Answers(
        None, None, canned[:len(texts)], 0, 0))
    spec = make_spec({"kind": "seq2seq", "path": str(tiny_t5)},
                     {"strategy": "icl", "k": 2, "decoding": "generate", "unparsed_penalty": 1.5},
                     task="regression")
    record = runner.execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    preds = pl.read_parquet(tmp_path / "p.parquet")
    assert preds["prediction"].to_list() == [0.8, -0.6, 0.1, None, -0.5, None, 0.7, -0.65, 0.05]
    assert record["metrics"]["unparseable_rate"] == pytest.approx(2 / 9)
    # The other parse-failure rules: unparsed read as 0 (neutral), or left out.
    assert record["metrics"]["dropped_n"] == 7
    kept = [(p, g) for p, g in zip(preds["prediction"], preds["gold"]) if p is not None]
    assert record["metrics"]["dropped_mae"] == pytest.approx(np.mean([abs(p - g) for p, g in kept]))
    errors = [1.5 if p is None else abs(p - g) for p, g in zip(preds["prediction"], preds["gold"])]
    assert record["metrics"]["mae"] == pytest.approx(np.mean(errors))


def test_regression_refuses_label_scoring(make_spec, tiny_t5):
    spec = make_spec({"kind": "seq2seq", "path": str(tiny_t5)}, {"strategy": "icl", "decoding": "score"},
                     task="regression")
    with pytest.raises(ValueError, match="decoding: generate"):
        icl.run(spec)


def test_test_subset_is_the_rows_the_dataset_marks(make_spec, tiny_t5, tmp_path):
    from tiny_models import tiny_sentiment_rows

    rows = [{**r, "test_subset": r["split"] == "test" and int(r["id"].removeprefix("test")) % 2 == 0}
            for r in tiny_sentiment_rows()]
    spec = make_spec({"kind": "seq2seq", "path": str(tiny_t5)}, {"strategy": "icl", "test_subset": True}, rows=rows)
    marked = [r["id"] for r in rows if r["test_subset"]]
    assert spec.test_rows()["id"].to_list() == marked
    record = runner.execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    assert record["metrics"]["n_test"] == len(marked) == 5


# --- the paper study config ---------------------------------------------------------------------------------

def test_paper_config_validates(repo, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = tbconfig.load(repo / "config" / "paper.yaml")
    runs = tbconfig.runs(config)
    models = {r.model for r in runs}
    assert models == {"flan_t5_base", "flan_t5_large", "flan_t5_xl", "bert_base"}   # no key, no API runs
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    api_runs = [r for r in tbconfig.runs(config) if r.model == "gpt35"]
    assert api_runs and all(config["methods"][r.method]["decoding"] == "generate" for r in api_runs)
    strategies = {config["methods"][r.method]["strategy"] for r in runs}
    assert {"icl", "generative_qlora", "full", "lora"} <= strategies
    similar = [m for m, c in config["methods"].items() if c.get("selection") == "similar"]
    assert similar and all(config["models"][config["methods"][m]["retriever"]]["kind"] == "encoder"
                           for m in similar)
    assert config["models"]["gpt35"]["enabled_if_env"] == "OPENAI_API_KEY"


def test_paper_config_dry_runs(repo):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--configfile",
                           "config/paper.yaml"], cwd=repo, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prompt_llm" in proc.stdout and "finetune_generative" in proc.stdout
