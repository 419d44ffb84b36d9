"""Embedding zero-/few-shot classification: what an encoder can do with no or a few labelled examples.

No generative model is available offline, so the default study answers the few-shot question with the encoder:
- embedding_zero_shot: cosine similarity of each text to a description of each label;
- embedding_few_shot: `shots` labelled examples per class, drawn from train by the run's seed (several seeds =
  several draws), then nearest class centroid or kNN, on the cached mean-pooled embeddings.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import torch

from tunebench.modeling.features import load_features
from tunebench.modeling.loading import load_encoder, load_tokenizer, pool
from tunebench.spec import RunOutput, RunSpec

DESCRIPTION_TEMPLATE = "The sentiment of this financial text is {label}."


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def split_features(spec: RunSpec, cache: dict, split: str) -> tuple[np.ndarray, pl.DataFrame]:
    part = spec.split(split).select("id", "label")
    row = {i: n for n, i in enumerate(cache["ids"].tolist())}
    return normalise(cache["features"][[row[i] for i in part["id"].to_list()]]), part


@torch.inference_mode()
def embed_texts(model_cfg: dict, texts: list[str]) -> np.ndarray:
    tokenizer = load_tokenizer(model_cfg)
    encoder = load_encoder(model_cfg).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=model_cfg["max_length"], return_tensors="pt")
    out = encoder(**batch)
    return pool(out.last_hidden_state, batch["attention_mask"], "mean").float().numpy()


def draw_shots(train: pl.DataFrame, labels: list[str], shots: int, seed: int) -> np.ndarray:
    """Row indices of `shots` examples per class (all of a class if it has fewer), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    label_col = np.asarray(train["label"].to_list())
    picked = []
    for lab in labels:
        rows = np.flatnonzero(label_col == lab)
        picked.extend(rng.choice(rows, size=min(shots, len(rows)), replace=False).tolist())
    return np.asarray(sorted(picked))


def predict(similarity: np.ndarray, labels: list[str], test: pl.DataFrame) -> pl.DataFrame:
    frame = {"id": test["id"].to_list(), "prediction": [labels[i] for i in similarity.argmax(1)]}
    frame.update({f"score_{lab}": similarity[:, i] for i, lab in enumerate(labels)})
    return pl.DataFrame(frame)


def run(spec: RunSpec) -> RunOutput:
    torch.set_num_threads(spec.threads)
    cfg, labels = spec.method_cfg, spec.labels
    cache = load_features(spec.features_path)
    test_x, test = split_features(spec, cache, "test")
    t0 = time.perf_counter()
    if spec.strategy == "embedding_zero_shot":
        descriptions = [cfg["label_descriptions"].get(lab, DESCRIPTION_TEMPLATE.format(label=lab)) for lab in labels]
        anchors = normalise(embed_texts(spec.model_cfg, descriptions))
        info = {"label_descriptions": descriptions, "labelled_examples": 0}
        similarity = test_x @ anchors.T
    else:
        train_x, train = split_features(spec, cache, "train")
        picked = draw_shots(train, labels, cfg["shots"], spec.seed)
        shot_x, shot_y = train_x[picked], np.asarray(train["label"].to_list())[picked]
        if cfg["classifier"] == "centroid":
            centroids = normalise(np.stack([shot_x[shot_y == lab].mean(0) for lab in labels]))
            similarity = test_x @ centroids.T
        else:
            from sklearn.neighbors import KNeighborsClassifier

            knn = KNeighborsClassifier(n_neighbors=min(cfg["shots"], len(picked)), metric="cosine")
            knn.fit(shot_x, shot_y)
            proba = knn.predict_proba(test_x)
            similarity = proba[:, [list(knn.classes_).index(lab) for lab in labels]]
        info = {"labelled_examples": int(len(picked)), "shots": cfg["shots"], "classifier": cfg["classifier"],
                "shot_ids": train["id"].gather(picked).to_list()}
    info.update(train_time_s=0.0, eval_time_s=time.perf_counter() - t0, trainable_params=0,
                total_params=int(cache["encoder_params"]), trainable_fraction=0.0,
                feature_cache_s=float(cache["seconds"]), device="cpu", precision="fp32")
    return RunOutput(predict(similarity, labels, test), info)
