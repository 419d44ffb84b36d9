"""README.md's results block is the study's generated table, byte for byte: nobody types a number into it."""
import re
from pathlib import Path

import polars as pl

from tunebench.evaluation.report import readme_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"      # the default study's tables, copied from results/ with the report


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- results:begin -->\n(.*?)<!-- results:end -->", text, re.S)
    assert match, "README.md has no <!-- results:begin --> ... <!-- results:end --> block"
    return match.group(1)


def test_readme_block_is_the_generated_table():
    assert readme_block().strip() == (RESULTS / "readme_table.md").read_text().strip()


def test_generated_table_follows_from_the_kept_results():
    summary = pl.read_csv(RESULTS / "summary.csv", infer_schema_length=None)
    runs = pl.read_csv(RESULTS / "runs.csv", infer_schema_length=None)
    table = readme_table(summary, runs, {"classification": "macro_f1", "regression": "r2"}, "config/config.yaml")
    assert table.strip() == (RESULTS / "readme_table.md").read_text().strip()
