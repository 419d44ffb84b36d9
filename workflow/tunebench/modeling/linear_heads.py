"""Linear models on fixed features — TF-IDF vectors, dictionary scores, a frozen encoder's embeddings — fitted
to convergence by scikit-learn, with the regularisation chosen on dev.

Logistic regression (L-BFGS, multinomial) for classes, ridge (closed form) for a number; a grid of penalties is
fitted on train and the best on dev is kept (macro-F1, or R²), ties going to the more strongly regularised
model. Light: no torch, so the baselines never pay its import.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tunebench.evaluation import metrics


def linear_candidates(spec, scale: bool) -> list:
    """Logistic regression over C_grid or ridge over alpha_grid (after standardising the features if `scale`),
    the most strongly regularised first."""
    cfg = spec.method_cfg
    if spec.task == "classification":
        grid = [({"C": c}, LogisticRegression(C=c, max_iter=2000)) for c in sorted(cfg["C_grid"])]
    else:
        grid = [({"alpha": a}, Ridge(alpha=a)) for a in sorted(cfg["alpha_grid"], reverse=True)]
    return [(hp, make_pipeline(StandardScaler(), model) if scale else model) for hp, model in grid]


# ---- fitting, selection, prediction ----

def select_on_dev(candidates, X_train, y_train, X_dev, y_dev, spec):
    """Fit every candidate on train; return the best on dev (the first on ties), its settings and dev score."""
    metric = "macro_f1" if spec.task == "classification" else "r2"
    # The shared metrics take label names (they compare as objects), so class indices are mapped back.
    as_names = (lambda y: np.asarray(spec.labels)[y]) if spec.task == "classification" else (lambda y: y)
    best = None
    for hyperparameters, model in candidates:
        model.fit(X_train, y_train)
        dev_score = metrics.scalars(spec.task, as_names(y_dev), as_names(model.predict(X_dev)), spec.labels)[metric]
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


