"""Raw corpora → one validated table per dataset: `id, text, label|target, group, split`.

Every loader reports problems as DataError naming the file and the line or row, so a user can open the file
and fix it. Nothing here silently drops or repairs a row.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import polars as pl

from tunebench import files

FPB_FILES = {
    "50agree": "Sentences_50Agree.txt",
    "66agree": "Sentences_66Agree.txt",
    "75agree": "Sentences_75Agree.txt",
    "allagree": "Sentences_AllAgree.txt",
}


class DataError(ValueError):
    """A problem in an input file, named by file and line/row."""


def raw_files(ds: dict) -> list[Path]:
    """The raw files a dataset reads (they are the `prepare` rule's inputs and what sha256 covers)."""
    path = Path(ds["path"])
    if ds["loader"] == "fpb":
        return [path / FPB_FILES[ds["agreement"]]]
    if ds["loader"] == "tfns":
        return [path / "sent_train.csv", path / "sent_valid.csv"]
    if ds["loader"] == "hf":
        return []
    return [path]


def verify_sha256(ds: dict) -> dict[str, str]:
    """Hash every raw file; raise if one differs from the config's expected digest. Returns name → digest."""
    digests = {}
    for f in raw_files(ds):
        if not f.exists():
            raise DataError(f"{f}: file not found")
        digests[f.name] = files.sha256(f)
    for name, expected in ds.get("sha256", {}).items():
        if name not in digests:
            raise DataError(f"sha256 given for '{name}', which is not one of the files read: {sorted(digests)}")
        if digests[name] != expected:
            raise DataError(f"{raw_dir(ds) / name}: sha256 is {digests[name]}, config expects {expected} "
                            f"(the file changed: restore the original bytes or update the digest)")
    return digests


def raw_dir(ds: dict) -> Path:
    p = Path(ds["path"])
    return p if p.is_dir() else p.parent


# --- loaders: each returns rows as dicts with keys id, text, label|target, group, split, line -------------


def _decode(path: Path, encoding: str) -> list[str]:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    lines = data.split(b"\n")
    out = []
    for i, raw in enumerate(lines, start=1):
        try:
            out.append(raw.decode(encoding).rstrip("\r"))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}, line {i}: bytes not valid {encoding} at column {e.start + 1}: "
                            f"{raw[max(0, e.start - 10):e.end + 10]!r}") from None
    return out


def load_fpb(ds: dict) -> list[dict]:
    """Financial PhraseBank: latin-1, CRLF, `sentence@label`, split on the last '@'."""
    path = raw_files(ds)[0]
    # latin-1 decodes any byte, so an undecodable file can only be caught by what it decodes to; the release is
    # latin-1, and a UTF-8 re-encoding shows up as mojibake like 'Ã¤'. Refuse it rather than train on it.
    rows = []
    for i, line in enumerate(_decode(path, "latin-1"), start=1):
        if not line.strip():
            continue
        if "Ã" in line and any(c in line for c in "¤¶©¼¥"):
            raise DataError(f"{path}, line {i}: looks UTF-8 encoded (mojibake '{line[:40]}…'); "
                            f"FPB files are latin-1 as released")
        text, sep, label = line.rpartition("@")
        if not sep:
            raise DataError(f"{path}, line {i}: no '@' separating sentence and label: {line[:60]!r}")
        rows.append({"id": f"fpb-{i}", "text": text.strip(), "label": label.strip(), "line": i})
    return rows


def load_tfns(ds: dict) -> list[dict]:
    """Twitter Financial News: quoted CSV `text,label`; the valid file is the test set (as in the studies)."""
    rows = []
    for path, split in zip(raw_files(ds), ["train", "test"]):
        for r in _read_csv(path, required=["text", "label"]):
            rows.append({"id": f"{split}-{r['line'] - 1}", "text": r["text"], "label": r["label"],
                         "split": split, "line": r["line"], "file": str(path)})
    return rows


def load_semeval17(ds: dict) -> list[dict]:
    """SemEval-2017 Task 5 headlines: JSON list of {id, company, title, sentiment}; grouped by title."""
    path = raw_files(ds)[0]
    items = _read_json_list(path)
    rows = []
    for i, item in enumerate(items):
        for key in ("id", "company", "title", "sentiment"):
            if key not in item:
                raise DataError(f"{path}, item {i}: missing key '{key}'")
        # The same headline carries one score per company, so the company is part of the input.
        # The release's ids repeat (1142 items, 1139 ids); id + company is unique.
        rows.append({"id": f"{item['id']}-{item['company']}", "text": f"{item['company']}: {item['title']}",
                     "target": item["sentiment"], "group": item["title"], "line": i})
    return rows


def load_table(ds: dict) -> list[dict]:
    """A user's CSV / Parquet / JSON Lines / JSON file, with the column mapping from config."""
    path = Path(ds["path"])
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv" or suffix == ".tsv":
        records = _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        try:
            records = pl.read_parquet(path).to_dicts()
        except Exception as e:  # polars raises several kinds for a damaged file
            raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        for i, r in enumerate(records):
            r["line"] = i
    elif suffix in (".jsonl", ".ndjson"):
        records = []
        for i, line in enumerate(_decode(path, "utf-8"), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {i}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}, line {i}: expected a JSON object, got {type(rec).__name__}")
            rec["line"] = i
            records.append(rec)
    elif suffix == ".json":
        records = _read_json_list(path)
        for i, r in enumerate(records):
            r["line"] = i
    else:
        raise DataError(f"{path}: unknown file type '{suffix}' (expected .csv, .tsv, .parquet, .jsonl or .json)")
    if not records:
        raise DataError(f"{path}: no rows")
    return _map_columns(path, records, ds)


def load_hf(ds: dict) -> list[dict]:
    """A Hugging Face hub dataset (needs a network): the configured splits, mapped like a table."""
    import datasets

    rows = []
    for split, hub_split in ds["hf_split"].items():
        part = datasets.load_dataset(ds["path"], split=hub_split)
        records = [dict(r, line=i) for i, r in enumerate(part)]
        for r in _map_columns(Path(f"{ds['path']}[{hub_split}]"), records, ds):
            r.setdefault("split", split)
            r["id"] = f"{split}-{r['id']}"
            rows.append(r)
    return rows


def _map_columns(path: Path, records: list[dict], ds: dict) -> list[dict]:
    cols = ds["columns"]
    wanted = {"text": cols.get("text", "text")}
    wanted["label" if ds["task"] == "classification" else "target"] = cols.get(
        "label" if ds["task"] == "classification" else "target")
    for key in ("id", "group", "split", "prefix"):
        if key in cols:
            wanted[key] = cols[key]
    if ds["split"]["method"] == "column":
        wanted["split_value"] = ds["split"]["column"]
    present = set(records[0])
    for key, col in wanted.items():
        if col not in present:
            raise DataError(f"{path}: missing column '{col}' (config key columns.{key}); "
                            f"columns are {sorted(c for c in present if c != 'line')}")
    rows = []
    for r in records:
        for key, col in wanted.items():
            # JSON records need not share keys, so one can lack a column that the first record has.
            if col not in r:
                raise DataError(f"{path}, {_unit(ds)} {r['line']}: missing column '{col}' "
                                f"(config key columns.{key})")
        row = {key: r[col] for key, col in wanted.items()}
        row["line"] = r["line"]
        if "prefix" in row:
            row["text"] = f"{row.pop('prefix')}: {row['text']}"
        row.setdefault("id", str(r["line"]))
        rows.append(row)
    return rows


def _read_csv(path: Path, required=(), delimiter=",") -> list[dict]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: bytes not valid UTF-8 ({e.reason})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = reader.fieldnames or []
    for col in required:
        if col not in header:
            raise DataError(f"{path}: missing column '{col}'; header is {header}")
    rows = []
    for r in reader:
        if None in r:
            raise DataError(f"{path}, line {reader.line_num}: more fields than the header has")
        r["line"] = reader.line_num
        rows.append(r)
    return rows


def _read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: bytes not valid UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got a {type(data).__name__}")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataError(f"{path}, item {i}: expected an object, got {type(item).__name__}")
    return data


LOADERS = {"fpb": load_fpb, "tfns": load_tfns, "semeval17": load_semeval17, "table": load_table, "hf": load_hf}


# --- validation ----------------------------------------------------------------------------------------


def _unit(ds: dict) -> str:
    """What a row's number counts in its source: a text line, an item of a JSON list, or a table row (from 0)."""
    if ds["loader"] == "semeval17" or (ds["loader"] == "table" and ds["path"].lower().endswith(".json")):
        return "item"
    if ds["loader"] == "hf" or (ds["loader"] == "table" and ds["path"].lower().endswith(".parquet")):
        return "row"
    return "line"


def validate_rows(rows: list[dict], ds: dict, name: str) -> pl.DataFrame:
    """Check every row and build the table. Errors name the file and line of the offending row."""
    where_file = str(raw_files(ds)[0]) if raw_files(ds) else ds["path"]

    def where(r):
        return f"{r.get('file', where_file)}, {_unit(ds)} {r['line']}"

    if not rows:
        raise DataError(f"{where_file}: no rows")
    seen: dict[str, dict] = {}
    label_map = ds.get("label_map", {})
    labels = ds.get("labels", [])
    for r in rows:
        text = r.get("text")
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where(r)}: expected a text, got {type(text).__name__} {text!r}")
        if not text or not text.strip():
            raise DataError(f"{where(r)}: empty text")
        r["text"] = text.strip()
        rid = str(r["id"]) if r.get("id") is not None else ""
        if not rid:
            raise DataError(f"{where(r)}: empty id")
        if rid in seen:
            raise DataError(f"{where(r)}: duplicate id '{rid}' (first at {where(seen[rid])})")
        r["id"] = rid
        seen[rid] = r
        if ds["task"] == "classification":
            raw = "" if r.get("label") is None else str(r["label"]).strip()
            if not raw:
                raise DataError(f"{where(r)}: missing label (expected one of {labels})")
            label = label_map.get(raw, raw)
            if label not in labels:
                raise DataError(f"{where(r)}: unknown label '{raw}' (expected one of {labels}"
                                f"{' after label_map' if label_map else ''})")
            r["label"] = label
        else:
            r["target"] = _number(r.get("target"), where(r))
        if r.get("group") is not None:
            r["group"] = str(r["group"])
    columns = {"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}
    if ds["task"] == "classification":
        columns["label"] = [r["label"] for r in rows]
    else:
        columns["target"] = [r["target"] for r in rows]
    columns["group"] = [r.get("group") for r in rows]
    columns["given_split"] = [None if r.get("split") is None else str(r["split"]) for r in rows]
    columns["split_value"] = [None if r.get("split_value") is None else str(r["split_value"]) for r in rows]
    columns["source_line"] = [int(r["line"]) for r in rows]
    return pl.DataFrame(columns, schema_overrides={"group": pl.String, "given_split": pl.String,
                                                   "split_value": pl.String})


def _number(value, where: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: missing regression target")
    if isinstance(value, bool):
        raise DataError(f"{where}: regression target is a boolean ({value}), expected a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: regression target {value!r} is not a number") from None
    if not math.isfinite(x):
        raise DataError(f"{where}: regression target {value!r} is not finite")
    return x


def load_dataset_table(ds: dict, name: str) -> pl.DataFrame:
    """Read and validate a dataset's raw file(s) (before splitting)."""
    rows = LOADERS[ds["loader"]](ds)
    return validate_rows(rows, ds, name)
