"""Same config and seed on CPU → bit-identical predictions, for one method of each family; and interrupted
prepare / tokenize steps leave nothing that looks finished."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest

from test_encoder import LABELS, make_spec as make_encoder_spec, resolved, synthetic_table, workspace  # noqa: F401
from tunebench.runner import execute
from tunebench.spec import RunSpec


def predictions_of(spec: RunSpec, out_dir) -> pl.DataFrame:
    out_dir.mkdir(parents=True, exist_ok=True)
    execute(spec, out_dir / "predictions.parquet", out_dir / "metrics.json")
    return pl.read_parquet(out_dir / "predictions.parquet")


def assert_identical_twice(spec: RunSpec, tmp_path):
    first = predictions_of(replace(spec, run_dir=tmp_path / "a" / "run"), tmp_path / "a")
    second = predictions_of(replace(spec, run_dir=tmp_path / "b" / "run"), tmp_path / "b")
    assert first.height > 0
    assert first.equals(second), "two runs with the same seed differ"


def test_baseline_is_bit_identical(make_table_spec, tmp_path):
    spec = make_table_spec(synthetic_table(), "classification", LABELS, {"strategy": "learned_dictionary"})
    assert_identical_twice(spec, tmp_path)


def test_encoder_fine_tuning_is_bit_identical(workspace, tmp_path):  # noqa: F811
    assert_identical_twice(make_encoder_spec(workspace, "full", epochs=2), tmp_path)


def test_embedding_few_shot_is_bit_identical(workspace, tmp_path):  # noqa: F811
    base = make_encoder_spec(workspace, "full")
    method = resolved({"strategy": "embedding_few_shot", "shots": 3})["methods"]["m"]
    spec = replace(base, method="few", method_cfg=method, features_path=str(workspace / "mean.npz"))
    assert_identical_twice(spec, tmp_path)
    other_draw = predictions_of(replace(spec, seed=1, run_dir=tmp_path / "c" / "run"), tmp_path / "c")
    assert not other_draw.equals(pl.read_parquet(tmp_path / "a" / "predictions.parquet")), "seeds = draws"


@pytest.mark.parametrize("decoding", ["score", "generate"])
def test_icl_with_a_tiny_model_is_bit_identical(make_spec, tiny_t5, tmp_path, decoding):
    spec = make_spec({"kind": "seq2seq", "path": str(tiny_t5), "max_length": 256},
                     {"strategy": "icl", "k": 2, "selection": "random", "decoding": decoding})
    assert_identical_twice(spec, tmp_path)


def test_interrupted_tokenize_leaves_no_output(workspace, tmp_path, monkeypatch):  # noqa: F811
    import datasets

    from tunebench.modeling.tokenize import tokenize_table

    def die(self, *args, **kwargs):
        raise KeyboardInterrupt("killed while writing shards")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", die)
    out = tmp_path / "tokenized" / "len32"
    with pytest.raises(KeyboardInterrupt):
        tokenize_table(workspace / "table.parquet", make_encoder_spec(workspace, "full").model_cfg, out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == [], "no temporary folder is left behind"


def test_interrupted_prepare_leaves_no_table(tmp_path, monkeypatch):
    from tunebench import config as tbconfig, files
    from tunebench.data.prepare import prepare_dataset

    ds = tbconfig.load("config/config.yaml")["datasets"]["semeval17_headlines"]
    real_write = files.atomic_path

    def failing_parquet(path, df):
        with real_write(path) as tmp:
            df.head(10).write_parquet(tmp)      # half-written ...
            raise KeyboardInterrupt("killed")   # ... then killed before the rename

    monkeypatch.setattr(files, "write_parquet", failing_parquet)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(ds, "semeval17_headlines", tmp_path / "table.parquet", tmp_path / "splits.csv",
                        tmp_path / "manifest.json")
    assert not (tmp_path / "table.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".table")]
