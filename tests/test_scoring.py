"""Label scoring rules (sum, mean, byte, calibrated, pmi), their choice on dev, and the collapse flag."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from tunebench import runner
from tunebench.evaluation import metrics
from tunebench.modeling import lm, scoring

from tiny_models import WordTokenizer, cacheless_output


class BagLM(torch.nn.Module):
    """A causal 'model' whose next-token logits are a fixed bias plus the evidence of every token in the input:
    a task where a prompt-independent bias toward one answer is the only error (the shape Zhao et al. describe:
    the prompt pushes every answer toward one label)."""

    def __init__(self, vocab: int, bias: dict[int, float], evidence: dict[int, dict[int, float]]):
        from transformers import LlamaConfig

        super().__init__()
        self.config = LlamaConfig(vocab_size=vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=1)
        self.bias = torch.zeros(vocab)
        for token, value in bias.items():
            self.bias[token] = value
        self.evidence = torch.zeros(vocab, vocab)
        for token, pushes in evidence.items():
            for answer, value in pushes.items():
                self.evidence[token, answer] = value

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None, logits_to_keep=0,
                cache=None):
        logits = (self.bias + self.evidence[input_ids].sum(1))[:, None, :].expand(-1, input_ids.shape[1], -1)
        return cacheless_output(logits, logits_to_keep, cache)


def test_contextual_calibration_removes_a_bias_that_is_the_only_error():
    """Raw scores answer A for every text (bias 2 toward A; the text's evidence is worth 1); dividing by what
    the content-free inputs give recovers every label, and the other rules do not."""
    tok = WordTokenizer(["<pad>", "text", "is", "good", "bad", "N/A", "[MASK]", "A", "B"])
    i = tok.ids
    model = BagLM(len(i), bias={i["A"]: 2.0}, evidence={i["good"]: {i["A"]: 1.0}, i["bad"]: {i["B"]: 1.0}})
    texts = ["good", "bad", "bad", "good", "bad"]
    gold = ["a" if t == "good" else "b" for t in texts]
    answer_ids = [[i["A"]], [i["B"]]]

    def render(text, context=()):
        return f"text {text} is"

    def run_prompts(prompts):
        return lm.answer_prompts(model, tok, prompts, answer_ids).loglik

    loglik = run_prompts([render(t) for t in texts])
    scores, cost = scoring.label_scores(loglik, [" A", " B"], answer_ids, scoring.RULES, run_prompts, render,
                                        premise_prompt="is")
    labels = ["a", "b"]
    predicted = {rule: [labels[j] for j in scores.rule(rule).argmax(1)] for rule in scoring.RULES}
    assert predicted["calibrated"] == gold
    for rule in ("sum", "mean", "byte"):
        assert predicted[rule] == ["a"] * len(texts), rule   # the bias decides every row
    assert cost["content_free_prompts"] == 3
    # The content-free distribution is the bias alone: p(A) = e^2 / (e^2 + 1).
    assert scores.content_free[0] == pytest.approx([np.exp(2) / (np.exp(2) + 1), 1 / (np.exp(2) + 1)], abs=1e-5)
    # PMI against a premise that carries the same bias removes it as well.
    assert predicted["pmi"] == gold
    assert np.allclose(scores.probabilities("calibrated").sum(1), 1)


def test_byte_and_token_normalisation_of_answers_of_unequal_length():
    """'bearish' as two tokens (bear+ish, −0.6 each) against 'neutral' as one (−1.0): the per-token mean
    favours the two-token word (−0.6 > −1.0), the sum and the per-byte rule do not (−1.2 / 8 bytes vs −1.0 / 8
    bytes favours neutral by the sum; per byte −0.15 vs −0.125)."""
    loglik = np.array([[-1.2, -1.0]])
    scores = scoring.LabelScores(loglik, np.array([2.0, 1.0]), np.array([len(" bearish"), len(" neutral")], float))
    assert scores.rule("mean").argmax() == 0
    assert scores.rule("sum").argmax() == 1
    assert scores.rule("byte") == pytest.approx(np.array([[-1.2 / 8, -1.0 / 8]]))
    assert scores.rule("byte").argmax() == 1
    # Bytes, not characters or tokens: a non-ASCII answer counts its UTF-8 bytes.
    s, _ = scoring.label_scores(loglik, [" baissier", " neutré"], [[1, 2], [3]], ["byte"], None, None)
    assert s.answer_bytes.tolist() == [9.0, 8.0]


def test_unknown_or_unready_rules_are_refused():
    with pytest.raises(ValueError, match="unknown scoring rule"):
        scoring.check_rules(["mean", "acc_norm"], "methods.x.scoring")
    scores = scoring.LabelScores(np.zeros((1, 2)), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="content-free"):
        scores.rule("calibrated")


@pytest.mark.parametrize("pred, gold, collapsed", [
    (["pos"] * 95 + ["neg"] * 5, ["pos"] * 30 + ["neg"] * 40 + ["neu"] * 30, True),   # one class, gold is not
    (["pos"] * 100, ["pos"] * 80 + ["neg"] * 20, False),                               # gold is that lopsided
    (["pos"] * 89 + ["neg"] * 11, ["pos"] * 30 + ["neg"] * 70, False),                 # below 90%
    (["pos"] * 34 + ["neg"] * 33 + ["neu"] * 33, ["pos"] * 34 + ["neg"] * 33 + ["neu"] * 33, False),
])
def test_collapse_flag_on_crafted_predictions(pred, gold, collapsed):
    spread = metrics.prediction_spread(gold, pred)
    assert spread["collapsed"] is collapsed
    assert spread["top_class"] == "pos"
    assert spread["top_class_share"] == pytest.approx(max(pred.count(c) for c in set(pred)) / len(pred))
    if len(set(pred)) == 1:
        assert spread["prediction_entropy"] == 0.0
    if len(set(pred)) == 3 and collapsed is False and spread["top_class_share"] < 0.35:
        assert spread["prediction_entropy"] == pytest.approx(np.log2(3), abs=1e-3)


def test_every_classifier_run_records_its_spread(make_table_spec, tmp_path):
    from tiny_models import tiny_sentiment_rows

    spec = make_table_spec(pl.DataFrame(tiny_sentiment_rows("classification")), "classification",
                           ["negative", "neutral", "positive"], {"strategy": "majority"})
    record = runner.execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    assert record["metrics"]["top_class_share"] == 1.0 and record["metrics"]["prediction_entropy"] == 0.0
    gold = pl.read_parquet(tmp_path / "p.parquet")["gold"].to_list()
    top = record["metrics"]["top_class"]
    assert record["metrics"]["top_class_gold_share"] == pytest.approx(gold.count(top) / len(gold))
    assert record["metrics"]["collapsed"] is (record["metrics"]["top_class_gold_share"] < 0.7)


def test_icl_chooses_answer_words_and_rule_on_dev_and_records_them(make_spec, tiny_llama, tmp_path):
    """Two answer-word sets × five rules scored on the dev sample; the run records the choice, every
    candidate's dev score, and the test metrics of every rule beside the chosen one."""
    spec = make_spec({"kind": "causal", "path": str(tiny_llama), "max_length": 128},
                     {"strategy": "icl", "k": 2, "decoding": "score", "max_dev_samples": 4})
    spec.dataset_cfg["verbalizers"] = {"labels": {}, "plain": {"negative": "bad", "positive": "good"}}
    record = runner.execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    cost, got = record["cost"], record["metrics"]
    choice = cost["prompt_selection"]
    assert len(choice["dev_by_candidate"]) == 10 and choice["dev_rows"] == 4
    best = max(choice["dev_by_candidate"].values())
    first_best = next(k for k, v in choice["dev_by_candidate"].items() if v == best)
    assert f"{cost['verbaliser']}/{cost['scoring']}" == first_best   # ties go to the first declared
    assert cost["demonstration_draw"] == "random/per_run" and cost["content_free_prompts"] == 3
    for rule in scoring.RULES:
        assert 0 <= got[f"macro_f1_{rule}"] <= 1
    assert got["macro_f1"] == got[f"macro_f1_{cost['scoring']}"]
    words = cost["verbaliser_words"].split()
    assert words == (["negative", "neutral", "positive"] if cost["verbaliser"] == "labels" else
                     ["bad", "neutral", "good"])


def test_a_fixed_rule_and_fixed_words_skip_the_dev_pass(make_spec, tiny_llama, tmp_path):
    spec = make_spec({"kind": "causal", "path": str(tiny_llama), "max_length": 128},
                     {"strategy": "icl", "k": 0, "decoding": "score", "scoring": "sum"})
    record = runner.execute(spec, tmp_path / "p.parquet", tmp_path / "m.json")
    assert record["cost"]["prompt_selection"] is None and record["cost"]["scoring"] == "sum"
    assert record["cost"]["verbaliser"] == "labels" and record["cost"]["demonstration_draw"] == "none"
    assert "content_free_prompts" not in record["cost"] and "macro_f1_sum" not in record["metrics"]


@pytest.mark.parametrize("decoding", ["score", "both"])
def test_per_query_calibration_runs_beside_each_text_and_equals_running_it_apart(make_spec, tiny_llama, decoding,
                                                                                  monkeypatch):
    """With a draw per text, each text's content-free prompts run in one group with it (its demonstrations'
    prefix once); their distributions, and so every rule's scores, equal those of the content-free prompts run
    apart from the texts."""
    from tunebench.methods import icl

    spec = make_spec({"kind": "causal", "path": str(tiny_llama), "max_length": 128},
                     {"strategy": "icl", "k": 2, "draw": "per_query", "decoding": decoding, "batch_size": 3,
                      "scoring": ["calibrated", "mean"]})
    spec.method_cfg["precision"] = "fp32"
    backend, train, test = icl.LocalModel(spec), spec.split("train"), spec.test_rows()
    words = icl.verbaliser_sets(spec)["labels"]
    beside = icl.prompt_rows(spec, backend, train, test, words, ["calibrated", "mean"], score=True,
                             generate=decoding == "both")
    assert beside.scoring_cost["content_free_prompts"] == 3 * test.height
    assert beside.scoring_cost["content_free_time_s"] is None          # their time is the texts'
    assert len(beside.fitted) == test.height == len(beside.answers.loglik)
    if decoding == "both":
        assert len(beside.answers.generated) == test.height
    # The same run with the content-free prompts apart (as a shared draw runs them).
    monkeypatch.setattr(icl.scoring, "needs_content_free", lambda rules: False)
    texts_only = icl.prompt_rows(spec, backend, train, test, words, ["mean"], score=True, generate=False)
    monkeypatch.undo()
    apart, _ = scoring.label_scores(
        texts_only.answers.loglik, [beside.prompter.format.continuation(w) for w in words.values()],
        beside.prompter.answer_ids, ["calibrated"],
        run_prompts=lambda texts: backend.answer(beside.prompter, texts, score=True, generate=False).loglik,
        render=lambda text, context: icl.prompts.fit_prompt(
            beside.prompter.format, text,
            [(train["text"][j], words[train["label"][j]]) for j in context],
            beside.prompter.count_tokens, beside.prompter.limit).text,
        contexts=[tuple(c) for c in beside.chosen], context_of=list(range(test.height)),
        content_free=spec.method_cfg["content_free"])
    np.testing.assert_allclose(beside.answers.loglik, texts_only.answers.loglik, atol=1e-4)
    np.testing.assert_allclose(beside.scores.content_free, apart.content_free, atol=1e-4)
    np.testing.assert_allclose(beside.scores.rule("calibrated"), apart.rule("calibrated"), atol=1e-4)
