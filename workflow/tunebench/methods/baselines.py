"""Baselines: majority class, TF-IDF bag of words, fixed dictionaries (Loughran-McDonald, Harvard-IV) and a
learned dictionary. All run on CPU in seconds and give the same output for the same seed.

Every strategy follows one recipe: turn texts into a feature matrix (fitted on train), fit one model per
hyperparameter value on train, keep the one with the best dev score (macro-F1, or R² for regression; ties go
to the more strongly regularised model), and predict test with it. The chosen model is the one fitted on
train alone: it is not refitted on train + dev, so every method sees the same training rows.

- majority: the most frequent training class (its scores are the training class frequencies) / the train mean.
- tfidf: word 1..ngram_max-gram TF-IDF + logistic regression over C_grid / ridge over alpha_grid.
- lm_dictionary, hiv4_dictionary: the text's category scores (see tunebench.dictionaries) fed to variant
  logreg (standardised, C_grid) or ridge (standardised, alpha_grid) — `auto` picks by task — or gbm (histogram
  gradient boosting with default settings, nothing tuned; either task), or net_tone, a classification rule:
  a net tone positive − negative above +band predicts the positive label, below −band the negative label,
  otherwise the neutral one; band is chosen on dev among quantiles of the dev texts' |net tone|. Labels are
  mapped by name: a label containing 'neg' or 'bear' is the negative one, 'pos' or 'bull' the positive one,
  and the first other label is neutral (without one, the most frequent training label). Its scores are one-hot.
- learned_dictionary: one weight per vocabulary word and class (one per word for regression); a text's score
  is the length-normalised sum of its words' weights plus a bias, turned into class probabilities by softmax.
  The weights minimise the mean cross-entropy (half squared error for regression) + l2 · Σ weight², full batch,
  by L-BFGS from zero; l2 is chosen on dev. The run writes its lexicon to dictionary.csv.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import optimize, sparse, special
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tunebench.data import lexicons
from tunebench.modeling.linear_heads import Knob, linear_knob, predict, select_on_dev, tune_on_dev
from tunebench import files
from tunebench.evaluation import metrics
from tunebench.spec import RunOutput, RunSpec


def run(spec: RunSpec) -> RunOutput:
    cfg = spec.method_cfg
    train, dev, test = spec.split("train"), spec.split("dev"), spec.split("test")
    if cfg["max_train_samples"] and train.height > cfg["max_train_samples"]:
        train = train.sample(cfg["max_train_samples"], seed=spec.seed)
    y_train, y_dev = targets(spec, train), targets(spec, dev)

    t0 = time.perf_counter()
    featurize, candidates, facts = STRATEGIES[spec.strategy](spec, train, dev)
    X_train, X_dev = featurize(train["text"]), featurize(dev["text"])
    grid_search = None
    if isinstance(candidates, Knob):   # a regularisation grid, searched (and grown) on dev
        model, selected, dev_score, grid_search = tune_on_dev(candidates, X_train, y_train, X_dev, y_dev, spec)
    else:
        model, selected, dev_score = select_on_dev(candidates, X_train, y_train, X_dev, y_dev, spec)
    train_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    predictions = predict(spec, model, featurize(test["text"]), test["id"])
    eval_time = time.perf_counter() - t0

    if isinstance(model, LearnedDictionary):
        write_dictionary(spec, model)
    n_params = fitted_params(model)
    info = {"train_time_s": train_time, "eval_time_s": eval_time, "trainable_params": n_params,
            "total_params": n_params, "train_rows": train.height, "selected": selected, "grid_search": grid_search,
            "best_dev_metric": dev_score, "device": "cpu", **facts}
    return RunOutput(predictions=predictions, info=info)


def targets(spec: RunSpec, df: pl.DataFrame) -> np.ndarray:
    """Class indices in `spec.labels` order, or the float target."""
    if spec.task == "regression":
        return df["target"].to_numpy().astype(float)
    index = {label: i for i, label in enumerate(spec.labels)}
    return np.array([index[label] for label in df["label"]])


# ---- strategies: each returns (texts → features, [(hyperparameters, unfitted model)], facts for info) ----

def majority(spec, train, dev):
    model = DummyClassifier(strategy="prior") if spec.task == "classification" else DummyRegressor()
    return (lambda texts: np.zeros((len(texts), 1))), [({}, model)], {}


def tfidf(spec, train, dev):
    cfg = spec.method_cfg
    vectorizer = TfidfVectorizer(ngram_range=(1, cfg["ngram_max"]), min_df=cfg["min_df"]).fit(train["text"])
    facts = {"vocabulary_size": len(vectorizer.vocabulary_)}
    return vectorizer.transform, linear_knob(spec, scale=False), facts


def lm_dictionary(spec, train, dev):
    return dictionary_method(spec, train, dev, lexicons.load_lm(spec.lexicon_path))


def hiv4_dictionary(spec, train, dev):
    return dictionary_method(spec, train, dev, lexicons.load_hiv4())


def dictionary_method(spec, train, dev, lexicon):
    def featurize(texts):
        return lexicon.score(texts.to_list()).to_numpy()

    variant = spec.method_cfg["variant"]
    if variant == "auto":
        variant = "logreg" if spec.task == "classification" else "ridge"
    facts = {"variant": variant, **lexicon.provenance()}
    allowed = {"classification": ("logreg", "net_tone", "gbm"), "regression": ("ridge", "gbm")}[spec.task]
    if variant not in allowed:
        raise ValueError(f"{spec.method}: variant '{variant}' does not apply to {spec.task} "
                         f"(choose from {', '.join(allowed)})")
    if variant == "gbm":
        gbm = HistGradientBoostingClassifier if spec.task == "classification" else HistGradientBoostingRegressor
        return featurize, [({}, gbm(early_stopping=False, random_state=spec.seed))], facts
    if variant == "net_tone":
        tone_columns = [list(lexicon.categories).index(c) for c in ("positive", "negative")]
        tone_dev = featurize(dev["text"])[:, tone_columns] @ [1.0, -1.0]
        bands = np.unique(np.r_[0.0, np.quantile(np.abs(tone_dev), np.linspace(0, 0.95, 20))])
        rule = tone_rule_labels(spec.labels, targets(spec, train))
        candidates = [({"band": float(b)}, NetToneRule(float(b), *rule, len(spec.labels))) for b in bands]
        return (lambda texts: featurize(texts)[:, tone_columns]), candidates, facts
    return featurize, linear_knob(spec, scale=True), facts


def learned_dictionary(spec, train, dev):
    # Same letter-run tokens as the fixed dictionaries, lower-cased; a text's length counts all its words,
    # in the vocabulary or not.
    vectorizer = CountVectorizer(token_pattern=lexicons.WORD.pattern, min_df=spec.method_cfg["min_df"])
    vectorizer.fit(train["text"])

    def featurize(texts):
        lengths = np.array([max(len(lexicons.WORD.findall(t)), 1) for t in texts], dtype=float)
        return sparse.diags(1 / lengths) @ vectorizer.transform(texts).astype(float)

    n_classes = len(spec.labels) if spec.task == "classification" else 0
    words = vectorizer.get_feature_names_out()
    train_freq = np.asarray(vectorizer.transform(train["text"]).sum(axis=0)).ravel()
    knob = Knob("l2", spec.method_cfg["l2_grid"],
                lambda l2: LearnedDictionary(l2, spec.method_cfg["max_iter"], n_classes, words, train_freq),
                prefer="high")   # ties go to the stronger penalty
    return featurize, knob, {"vocabulary_size": len(words)}


STRATEGIES = {"majority": majority, "tfidf": tfidf, "lm_dictionary": lm_dictionary,
              "hiv4_dictionary": hiv4_dictionary, "learned_dictionary": learned_dictionary}


def fitted_params(model) -> int:
    """Number of fitted coefficients of the final estimator (standardisation and idf weights not counted)."""
    model = model[-1] if hasattr(model, "steps") else model
    if isinstance(model, DummyClassifier):
        return model.class_prior_.size
    if isinstance(model, DummyRegressor):
        return model.constant_.size
    if isinstance(model, NetToneRule):
        return 1  # the band
    if hasattr(model, "_predictors"):  # gradient boosting: one fitted value per leaf
        return sum(tree.get_n_leaf_nodes() for iteration in model._predictors for tree in iteration)
    return int(model.coef_.size + np.size(model.intercept_))


# ---- the two models scikit-learn does not have ----

@dataclass
class NetToneRule:
    """Features are (positive, negative) scores; net tone = positive − negative, compared with ±band."""

    band: float
    negative: int
    neutral: int
    positive: int
    n_classes: int

    def fit(self, X, y):
        self.classes_ = np.arange(self.n_classes)
        return self

    def predict(self, X):
        tone = X[:, 0] - X[:, 1]
        return np.where(tone > self.band, self.positive, np.where(tone < -self.band, self.negative, self.neutral))

    def predict_proba(self, X):
        return np.eye(self.n_classes)[self.predict(X)]


def tone_rule_labels(labels: list[str], y_train: np.ndarray) -> tuple[int, int, int]:
    """(negative, neutral, positive) label indices, matched by name (see the module docstring)."""
    def side(label):
        name = label.lower()
        return -1 if ("neg" in name or "bear" in name) else 1 if ("pos" in name or "bull" in name) else 0

    sides = [side(label) for label in labels]
    if -1 not in sides or 1 not in sides:
        raise ValueError(f"net_tone needs a negative and a positive label (by name), got {labels}")
    neutral = sides.index(0) if 0 in sides else int(np.bincount(y_train, minlength=len(labels)).argmax())
    return sides.index(-1), neutral, sides.index(1)


class LearnedDictionary:
    """A weight per word (and class): score = X @ weights + bias, X the length-normalised word counts.
    `words` name the columns of X; `train_freq` is each word's number of occurrences in train."""

    def __init__(self, l2: float, max_iter: int, n_classes: int, words, train_freq):
        self.l2, self.max_iter, self.n_classes = l2, max_iter, n_classes  # n_classes 0 = regression
        self.words, self.train_freq = words, train_freq

    def fit(self, X, y):
        n, d = X.shape
        k = self.n_classes or 1
        Y = np.eye(k)[y] if self.n_classes else y[:, None]

        def loss_and_gradient(theta):
            W, b = theta[: d * k].reshape(d, k), theta[d * k:]
            Z = X @ W + b
            if self.n_classes:
                Z = Z - Z.max(axis=1, keepdims=True)  # softmax is shift-invariant; this keeps exp finite
                log_norm = np.log(np.exp(Z).sum(axis=1))
                loss = np.mean(log_norm - (Y * Z).sum(axis=1))
                G = (np.exp(Z - log_norm[:, None]) - Y) / n
            else:
                loss = 0.5 * np.mean((Z - Y) ** 2)
                G = (Z - Y) / n
            loss += self.l2 * np.sum(W**2)
            grad_W = X.T @ G + 2 * self.l2 * W
            return loss, np.concatenate([np.ravel(grad_W), G.sum(axis=0)])

        result = optimize.minimize(loss_and_gradient, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                                   options={"maxiter": self.max_iter})
        self.coef_, self.intercept_ = result.x[: d * k].reshape(d, k), result.x[d * k:]
        self.n_iter_ = result.nit
        self.classes_ = np.arange(k)
        return self

    def decision_function(self, X):
        return X @ self.coef_ + self.intercept_

    def predict_proba(self, X):
        return special.softmax(self.decision_function(X), axis=1)

    def predict(self, X):
        scores = self.decision_function(X)
        return scores.argmax(axis=1) if self.n_classes else scores[:, 0]


def write_dictionary(spec: RunSpec, model: LearnedDictionary) -> None:
    """dictionary.csv: word, train_freq (occurrences in train), weight_<label> per class or weight."""
    names = [f"weight_{label}" for label in spec.labels] if spec.task == "classification" else ["weight"]
    table = pl.DataFrame({"word": model.words, "train_freq": model.train_freq.astype(np.int64),
                          **{name: model.coef_[:, i] for i, name in enumerate(names)}})
    files.write_csv(spec.run_dir / "dictionary.csv", table.sort(["train_freq", "word"], descending=[True, False]))
