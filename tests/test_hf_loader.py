"""Loader hf under the datasets library's own words: `name` (a hub id, a local folder, or a builder with
`data_files`), `config`, `revision`, `data_files` and `hf_split` (load_dataset's `split`). Offline: local Parquet
files, and a local folder whose README.md names two configs."""

from __future__ import annotations

import re

import polars as pl
import pytest

from tunebench import config as tbconfig
from tunebench.data import loaders
from tunebench.data.errors import DataError

datasets = pytest.importorskip("datasets")
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The datasets library's cache in tmp_path, so that no test reads another's prepared splits."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def resolve(dataset: dict) -> dict:
    dataset = {"loader": "hf", "task": "classification", "labels": LABELS, "split": {"method": "given"},
               "columns": {"label": "label", "id": "id"}, **dataset}
    config = tbconfig.validate({"datasets": {"d": dataset}, "methods": {"m": {"strategy": "majority"}},
                                "study": [{"datasets": ["d"], "methods": ["m"]}]})
    return config["datasets"]["d"]


def rows(prefix: str, n: int) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"{prefix}{i}" for i in range(n)], "text": [f"{prefix} text {i}" for i in range(n)],
                         "label": [LABELS[i % 3] for i in range(n)]})


def test_local_parquet_files_through_the_parquet_builder(tmp_path):
    rows("tr", 9).write_parquet(tmp_path / "train.parquet")
    rows("te", 6).write_parquet(tmp_path / "test.parquet")
    ds = resolve({"name": "parquet", "data_files": {"train": str(tmp_path / "train.parquet"),
                                                    "test": str(tmp_path / "test.parquet")}})
    table = loaders.load_dataset_table(ds, "d")
    assert table.height == 15
    assert table.filter(pl.col("given_split") == "test")["id"].to_list() == [f"test-te{i}" for i in range(6)]
    assert set(table.filter(pl.col("given_split") == "train")["text"]) == set(rows("tr", 9)["text"])


def test_hf_split_maps_our_splits_to_the_datasets_splits_and_slices(tmp_path):
    rows("a", 10).write_parquet(tmp_path / "all.parquet")
    ds = resolve({"name": "parquet", "data_files": str(tmp_path / "all.parquet"),   # one file: split "train"
                  "hf_split": {"train": "train[:6]", "test": "train[6:]"}})
    table = loaders.load_dataset_table(ds, "d")
    assert table.group_by("given_split").len().sort("given_split").rows() == [("test", 4), ("train", 6)]


@pytest.fixture
def two_config_folder(tmp_path):
    """A local dataset folder whose README.md declares configs `headlines` and `tweets`, each its own files."""
    folder = tmp_path / "finance"
    for config, n in (("headlines", 6), ("tweets", 9)):
        (folder / config).mkdir(parents=True)
        for split, part in (("train", rows(f"{config}-tr", n)), ("test", rows(f"{config}-te", 3))):
            part.write_csv(folder / config / f"{split}.csv")
    (folder / "README.md").write_text(
        "---\nconfigs:\n"
        + "".join(f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train.csv\n"
                  f"  - split: test\n    path: {c}/test.csv\n" for c in ("headlines", "tweets"))
        + "---\n# Two configs in one folder\n")
    return folder


def test_a_local_dataset_with_two_configs_loads_the_one_named(two_config_folder):
    headlines = loaders.load_dataset_table(resolve({"name": str(two_config_folder), "config": "headlines"}), "d")
    tweets = loaders.load_dataset_table(resolve({"name": str(two_config_folder), "config": "tweets"}), "d")
    assert headlines.height == 9 and tweets.height == 12
    assert all(t.startswith("headlines-") for t in headlines["text"])
    assert all(t.startswith("tweets-") for t in tweets["text"])


def test_an_unknown_config_name_is_a_data_error_naming_the_dataset(two_config_folder):
    with pytest.raises(DataError, match=f"{two_config_folder}: .*'quotes'"):
        loaders.load_dataset_table(resolve({"name": str(two_config_folder), "config": "quotes"}), "d")


def test_path_is_still_read_as_name_and_the_datasets_arguments_are_its_own(two_config_folder):
    ds = resolve({"path": str(two_config_folder), "config": "tweets", "revision": "main"})
    assert ds["name"] == str(two_config_folder) and "path" not in ds
    assert loaders.hf_arguments(ds) == {"path": str(two_config_folder), "name": "tweets", "revision": "main"}
    assert loaders.load_dataset_table(ds, "d").height == 12


@pytest.mark.parametrize("dataset, message", [
    ({"loader": "hf"}, "datasets.d.name': loader hf needs the dataset's name"),
    ({"loader": "hf", "name": "a/b", "path": "c/d"}, "`path` is another spelling of `name`, and the two differ"),
    ({"loader": "table", "name": "x.csv"}, "datasets.d.path': loader 'table' needs the file or folder"),
    ({"loader": "table", "path": "x.csv", "config": "tweets"}, "datasets.d.config': a key of loader hf"),
])
def test_the_source_keys_that_do_not_fit_the_loader_are_named(dataset, message):
    with pytest.raises(tbconfig.ConfigError, match=re.escape(message)):
        resolve(dataset)
