"""Baselines: dictionary scoring, the learned dictionary, and every baseline against majority on toy data."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import LM_LEXICON
from tunebench.methods import baselines
from tunebench.data import lexicons
from tunebench.runner import score

LABELS = ["negative", "neutral", "positive"]
# Words in neither the Loughran-McDonald nor the Harvard-IV lists.
NOISE = ["quarter", "market", "coast", "today", "unit", "plant", "metro", "stock", "year", "grid",
         "bank", "fund", "index", "trade", "sales", "office", "staff", "north", "energy", "retail"]


def corpus(positive_words, negative_words, n=360, seed=0) -> pl.DataFrame:
    """Half neutral texts of noise words; a quarter carry one positive word, a quarter one negative word.
    Splits 60/20/20; the regression target is +1 / 0 / -1 plus a little noise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ["neutral", "neutral", "positive", "negative"][i % 4]
        words = rng.choices(NOISE, k=rng.randint(4, 9))
        if label != "neutral":
            words.insert(rng.randrange(len(words) + 1),
                         rng.choice(positive_words if label == "positive" else negative_words))
        rows.append({"id": f"t{i}", "text": " ".join(words).capitalize() + ".", "label": label,
                     "target": {"negative": -1.0, "neutral": 0.0, "positive": 1.0}[label] + rng.gauss(0, 0.1),
                     "group": f"g{i}", "split": ["train", "train", "train", "dev", "test"][(i // 4) % 5]})
    return pl.DataFrame(rows)


def as_task(table: pl.DataFrame, task: str) -> pl.DataFrame:
    return table.drop("target" if task == "classification" else "label")


def run_and_score(make_table_spec, table, task, method_cfg, seed=0):
    spec = make_table_spec(as_task(table, task), task, LABELS if task == "classification" else None, method_cfg, seed)
    out = baselines.run(spec)
    return spec, out, score(spec, out)[1]


# ---- fixed dictionaries ----

def test_lm_scores_count_list_words_per_word_token():
    lm = lexicons.load_lm(LM_LEXICON)
    assert list(lm.categories) == ["positive", "negative", "uncertainty", "litigious", "constraining", "modal"]
    scores = lm.score([
        # 8 words: GAINS, IMPROVED positive; LOSS negative.
        "The company reported a loss, but gains improved.",
        # 8 words: LITIGATION negative + litigious, LAWSUIT litigious, FAIL negative, RESTRICT constraining,
        # MAY and COULD uncertainty + modal (weak modal).
        "Litigation may restrict growth; the lawsuit could FAIL.",
        # digits and punctuation are not words
        "12% 3.5 -- !",
    ]).to_dicts()
    assert scores[0] == pytest.approx({"positive": 2 / 8, "negative": 1 / 8, "uncertainty": 0, "litigious": 0,
                                       "constraining": 0, "modal": 0})
    assert scores[1] == pytest.approx({"positive": 0, "negative": 2 / 8, "uncertainty": 2 / 8,
                                       "litigious": 2 / 8, "constraining": 1 / 8, "modal": 2 / 8})
    assert scores[2] == pytest.approx(dict.fromkeys(lm.categories, 0.0))


def test_lm_modal_joins_strong_and_weak_modal_words():
    modal = lexicons.load_lm(LM_LEXICON).categories["modal"]
    assert {"MUST", "ALWAYS", "MAY", "COULD"} <= modal  # ALWAYS, MUST strong; MAY, COULD weak
    assert len(modal) == 19 + 27


def test_hiv4_matches_inflected_forms_of_its_lemmas():
    hiv4 = lexicons.load_hiv4()
    assert list(hiv4.categories) == ["positive", "negative"]
    # 6 words: GAINS and LOSSES reach the listed lemmas GAIN (positive) and LOSS (negative) through the stem.
    assert "GAINS" not in hiv4.categories["positive"] and "LOSSES" not in hiv4.categories["negative"]
    scores = hiv4.score(["Gains and losses in the quarter"]).to_dicts()[0]
    assert scores == pytest.approx({"positive": 1 / 6, "negative": 1 / 6})


def test_noise_words_of_the_toy_corpora_are_in_no_list():
    for lexicon in (lexicons.load_lm(LM_LEXICON), lexicons.load_hiv4()):
        for word in NOISE:
            assert not any(lexicon.normalise(word.upper()) in words for words in lexicon.categories.values())


def test_net_tone_labels_are_matched_by_name():
    assert baselines.tone_rule_labels(["bearish", "bullish", "neutral"], np.array([2, 2])) == (0, 2, 1)
    assert baselines.tone_rule_labels(["negative", "neutral", "positive"], np.array([0])) == (0, 1, 2)
    # no neutral label: a zero tone goes to the most frequent training label
    assert baselines.tone_rule_labels(["pos", "neg"], np.array([1, 1, 0])) == (1, 1, 0)
    with pytest.raises(ValueError, match="negative and a positive"):
        baselines.tone_rule_labels(["up", "down"], np.array([0]))


# ---- learned dictionary ----

def test_learned_dictionary_recovers_planted_words(make_table_spec):
    table = corpus(["surge"], ["plunge"])
    spec, out, result = run_and_score(make_table_spec, table, "classification", {"strategy": "learned_dictionary"})
    assert result["accuracy"] == 1.0
    lexicon = pl.read_csv(spec.run_dir / "dictionary.csv")
    assert lexicon.columns == ["word", "train_freq", "weight_negative", "weight_neutral", "weight_positive"]
    weights = {row["word"]: row for row in lexicon.to_dicts()}
    assert weights["surge"]["train_freq"] == table.filter(pl.col("split") == "train")["text"].str.count_matches(
        "(?i)surge").sum()
    top_positive = lexicon.sort("weight_positive", descending=True)["word"][0]
    top_negative = lexicon.sort("weight_negative", descending=True)["word"][0]
    assert (top_positive, top_negative) == ("surge", "plunge")
    # Noise words keep some weight towards neutral: their share of a text is higher where no planted word
    # is, and L2 spreads that evidence over all of them. Each one stays far below the planted words.
    planted = min(weights["surge"]["weight_positive"], weights["plunge"]["weight_negative"])
    noise = lexicon.filter(pl.col("word").is_in(NOISE)).select(pl.exclude("word", "train_freq")).to_numpy()
    assert np.abs(noise).max() < 0.2 * planted


def test_learned_dictionary_regression_weights_have_the_planted_signs(make_table_spec):
    spec, out, result = run_and_score(make_table_spec, corpus(["surge"], ["plunge"]), "regression",
                                      {"strategy": "learned_dictionary"})
    lexicon = pl.read_csv(spec.run_dir / "dictionary.csv")
    assert lexicon.columns == ["word", "train_freq", "weight"]
    weight = dict(zip(lexicon["word"], lexicon["weight"]))
    assert weight["surge"] > 0 > weight["plunge"]
    assert max(abs(weight[w]) for w in NOISE) < 0.1 * min(weight["surge"], -weight["plunge"])
    assert result["r2"] > 0.8


# ---- every baseline against majority ----

CLASSIFIERS = [{"strategy": "tfidf"}, {"strategy": "lm_dictionary"}, {"strategy": "hiv4_dictionary"},
               {"strategy": "lm_dictionary", "variant": "net_tone"},
               {"strategy": "hiv4_dictionary", "variant": "net_tone"},
               {"strategy": "lm_dictionary", "variant": "gbm"}, {"strategy": "learned_dictionary"}]
REGRESSORS = [{"strategy": "tfidf"}, {"strategy": "lm_dictionary"}, {"strategy": "hiv4_dictionary"},
              {"strategy": "lm_dictionary", "variant": "gbm"}, {"strategy": "learned_dictionary"}]
# Listed in both LM and Harvard-IV (the latter through the stem).
SEPARABLE = corpus(["gains", "improved", "good", "success"], ["losses", "declined", "poor", "failure"])


def majority_scores(make_table_spec, task):
    return run_and_score(make_table_spec, SEPARABLE, task, {"strategy": "majority"})[2]


def test_majority_predicts_the_most_frequent_class_with_its_train_frequency(make_table_spec):
    spec, out, result = run_and_score(make_table_spec, SEPARABLE, "classification", {"strategy": "majority"})
    assert set(out.predictions["prediction"]) == {"neutral"}
    train = spec.split("train")
    assert out.predictions["score_positive"][0] == pytest.approx((train["label"] == "positive").mean())
    assert out.info["trainable_params"] == 3 and out.info["train_rows"] == train.height


@pytest.mark.parametrize("method_cfg", CLASSIFIERS, ids=lambda c: "-".join(map(str, c.values())))
def test_classifier_beats_majority_on_separable_data(make_table_spec, method_cfg):
    majority = majority_scores(make_table_spec, "classification")
    spec, out, result = run_and_score(make_table_spec, SEPARABLE, "classification", method_cfg)
    assert result["macro_f1"] > majority["macro_f1"] + 0.3
    assert result["accuracy"] >= majority["accuracy"]
    scores = out.predictions.select([f"score_{label}" for label in LABELS]).to_numpy()
    assert np.allclose(scores.sum(axis=1), 1.0) and (scores >= 0).all()
    info = out.info
    assert info["device"] == "cpu" and info["train_rows"] == spec.split("train").height
    assert info["trainable_params"] == info["total_params"] > 0
    assert isinstance(info["selected"], dict) and info["train_time_s"] >= 0 and info["eval_time_s"] >= 0


@pytest.mark.parametrize("method_cfg", REGRESSORS, ids=lambda c: "-".join(map(str, c.values())))
def test_regressor_beats_majority_on_separable_data(make_table_spec, method_cfg):
    majority = majority_scores(make_table_spec, "regression")
    spec, out, result = run_and_score(make_table_spec, SEPARABLE, "regression", method_cfg)
    assert result["r2"] > majority["r2"] + 0.5
    assert out.predictions["prediction"].dtype == pl.Float64


def test_variant_that_does_not_fit_the_task_is_refused(make_table_spec):
    with pytest.raises(ValueError, match="net_tone.*regression"):
        run_and_score(make_table_spec, SEPARABLE, "regression", {"strategy": "lm_dictionary", "variant": "net_tone"})


# ---- determinism ----

@pytest.mark.parametrize("method_cfg", [{"strategy": "majority"}, {"strategy": "tfidf"},
                                        {"strategy": "lm_dictionary", "variant": "gbm"},
                                        {"strategy": "learned_dictionary"},
                                        {"strategy": "learned_dictionary", "max_train_samples": 100}],
                         ids=lambda c: "-".join(map(str, c.values())))
def test_same_seed_gives_identical_outputs(make_table_spec, method_cfg):
    table = corpus(["surge", "gains"], ["plunge", "losses"], seed=1)
    runs = []
    for _ in range(2):
        spec, out, result = run_and_score(make_table_spec, table, "classification", method_cfg, seed=3)
        lexicon = spec.run_dir / "dictionary.csv"
        runs.append((out, lexicon.read_bytes() if lexicon.exists() else None))
    (first, first_lexicon), (second, second_lexicon) = runs
    assert_frame_equal(first.predictions, second.predictions)
    assert first.info["selected"] == second.info["selected"]
    assert first_lexicon == second_lexicon
