"""Linear models on fixed features — TF-IDF vectors, dictionary scores, a frozen encoder's embeddings — fitted
to convergence by scikit-learn, with the regularisation chosen on dev.

Logistic regression (L-BFGS, multinomial) for classes, ridge (closed form) for a number; a grid of penalties is
fitted on train and the best on dev is kept (macro-F1, or R²), ties going to the more strongly regularised
model; the grid grows past its edge while the choice sits there (tunebench.selection). Light: no torch, so the baselines never pay its import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tunebench import selection
from tunebench.evaluation import metrics


@dataclass
class Knob:
    """One regularisation setting searched on dev: its name, declared grid, how a model is made at a value, and
    which end of the grid regularises more strongly (ties go there)."""

    key: str
    grid: list[float]
    make: Callable[[float], object]
    prefer: str   # "low" or "high": the more strongly regularised end


def linear_knob(spec, scale: bool) -> Knob:
    """Logistic regression over C_grid or ridge over alpha_grid (after standardising the features if `scale`)."""
    cfg = spec.method_cfg

    def wrap(model):
        return make_pipeline(StandardScaler(), model) if scale else model

    if spec.task == "classification":
        return Knob("C", cfg["C_grid"], lambda c: wrap(LogisticRegression(C=c, max_iter=2000)), prefer="low")
    return Knob("alpha", cfg["alpha_grid"], lambda a: wrap(Ridge(alpha=a)), prefer="high")


# ---- fitting, selection, prediction ----

def dev_metric(spec) -> str:
    return "macro_f1" if spec.task == "classification" else "r2"


def _dev_score(model, X_dev, y_dev, spec) -> float:
    # The shared metrics take label names (they compare as objects), so class indices are mapped back.
    as_names = (lambda y: np.asarray(spec.labels)[y]) if spec.task == "classification" else (lambda y: y)
    return metrics.scalars(spec.task, as_names(y_dev), as_names(model.predict(X_dev)), spec.labels)[dev_metric(spec)]


def tune_on_dev(knob: Knob, X_train, y_train, X_dev, y_dev, spec):
    """Fit a model at every value of the knob's grid on train, growing the grid past its edge while the best on
    dev sits there (tunebench.selection); return (the best model, {key: value}, its dev score, the trace)."""
    fitted = {}

    def score(value, seed, fraction):
        model = knob.make(value).fit(X_train, y_train)
        fitted[value] = model
        return _dev_score(model, X_dev, y_dev, spec)

    search = selection.Search(grid=list(knob.grid), greater=True, seeds=[0], tie="first", prefer=knob.prefer,
                              max_extensions=spec.method_cfg.get("grid_extensions", 0))
    trace = selection.search_grid(search, score, log=lambda line: print(f"{knob.key} {line}"))
    chosen = trace["chosen"]
    return fitted[chosen], {knob.key: chosen}, trace["dev_by_value"][f"{chosen:g}"], {"key": knob.key, **trace}


def select_on_dev(candidates, X_train, y_train, X_dev, y_dev, spec):
    """Fit every candidate on train; return the best on dev (the first on ties), its settings and dev score."""
    best = None
    for hyperparameters, model in candidates:
        model.fit(X_train, y_train)
        dev_score = _dev_score(model, X_dev, y_dev, spec)
        if best is None or dev_score > best[2]:
            best = (model, hyperparameters, dev_score)
    return best


def predict(spec, model, X, ids: pl.Series) -> pl.DataFrame:
    if spec.task == "regression":
        return pl.DataFrame({"id": ids, "prediction": model.predict(X).astype(float)})
    # Columns of predict_proba follow model.classes_, which lacks any class absent from train.
    proba = np.zeros((X.shape[0], len(spec.labels)))
    proba[:, model.classes_] = model.predict_proba(X)
    columns = {f"score_{label}": proba[:, i] for i, label in enumerate(spec.labels)}
    prediction = [spec.labels[i] for i in proba.argmax(axis=1)]
    return pl.DataFrame({"id": ids, "prediction": prediction, **columns})


