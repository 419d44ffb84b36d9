"""Raw corpora → one validated table per dataset: `id, text, label|target, group, split` (and, for FPB, each
row's highest annotator `agreement` level).

Every loader reports problems as DataError naming the file and the line or row, so a user can open the file
and fix it. Nothing here silently drops or repairs a row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from pathlib import Path

import polars as pl

from tunebench import files
from tunebench.data.decoding import first_control_character, read_text
from tunebench.data.errors import DataError

# The four agreement levels of Financial PhraseBank, lowest first: each file is a subset of the one before.
FPB_FILES = {
    "50agree": "Sentences_50Agree.txt",
    "66agree": "Sentences_66Agree.txt",
    "75agree": "Sentences_75Agree.txt",
    "allagree": "Sentences_AllAgree.txt",
}


def raw_files(ds: dict) -> list[Path]:
    """The raw files a dataset reads (they are the `prepare` rule's inputs and what sha256 covers).
    The first is the one whose rows become the table."""
    if ds["loader"] == "hf":
        return []   # the datasets library finds the files itself (a hub dataset has none here)
    path = Path(ds["path"])
    if ds["loader"] == "fpb":
        # All four levels, for each row's `agreement` stratum; the configured level's file holds the rows.
        return [path / FPB_FILES[ds["agreement"]]] + [path / name for level, name in FPB_FILES.items()
                                                     if level != ds["agreement"]]
    if ds["loader"] == "tfns":
        return [path / "sent_train.csv", path / "sent_valid.csv"]
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


def _lines(path: Path, encoding: str) -> list[str]:
    text = read_text(path, encoding)
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return [line.rstrip("\r") for line in text.split("\n")]


def load_fpb(ds: dict) -> list[dict]:
    """Financial PhraseBank: the configured agreement level's rows, each with the highest level it reaches."""
    rows = _read_fpb_file(raw_files(ds)[0])
    by_level = {level: rows if level == ds["agreement"] else _read_fpb_file(Path(ds["path"]) / name)
                for level, name in FPB_FILES.items()}
    for row, level in zip(rows, _highest_agreement(rows, by_level, Path(ds["path"]))):
        row["agreement"] = level
    return rows


def _read_fpb_file(path: Path) -> list[dict]:
    """One FPB file: latin-1, CRLF, `sentence@label`, split on the last '@'."""
    # latin-1 decodes any byte, so an undecodable file can only be caught by what it decodes to; the release is
    # latin-1, and a UTF-8 re-encoding shows up as mojibake like 'Ã¤'. Refuse it rather than train on it.
    rows = []
    for i, line in enumerate(_lines(path, "latin-1"), start=1):
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


def _highest_agreement(rows: list[dict], by_level: dict[str, list[dict]], folder: Path) -> list[str]:
    """The highest agreement level each row reaches, matched on (sentence, label) and counted in rows, not
    texts: a sentence that appears twice at one level but once at the next has one row at each level, and a
    sentence whose duplicate rows disagree on the label reaches a level only with the label given there."""
    counts = {level: Counter((r["text"], r["label"]) for r in level_rows) for level, level_rows in by_level.items()}
    levels = list(FPB_FILES)
    for lower, higher in zip(levels, levels[1:]):
        seen = Counter()
        for r in by_level[higher]:
            key = (r["text"], r["label"])
            seen[key] += 1
            if seen[key] > counts[lower][key]:
                raise DataError(f"{folder / FPB_FILES[higher]}, line {r['line']}: this sentence with label "
                                f"'{r['label']}' is not in {FPB_FILES[lower]} (or not as often); each agreement "
                                f"level's file should be a subset of the level below")
    seen = Counter()
    highest = []
    for r in rows:
        key = (r["text"], r["label"])
        seen[key] += 1
        highest.append(next(level for level in reversed(levels) if counts[level][key] >= seen[key]))
    return highest


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
    items, _ = _read_json(path)
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
    if ds.get("records") is not None and suffix != ".json":
        raise DataError(f"{path}: config key 'records' (a JSON pointer) applies to .json files only")
    keys = None
    if suffix == ".csv" or suffix == ".tsv":
        records = _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        # Parquet is binary: the text checks (byte-order marks, NUL bytes) do not apply; pyarrow checks the file's
        # structure, and validate_rows scans each text for control characters.
        try:
            records = pl.read_parquet(path).to_dicts()
        except Exception as e:  # polars raises several kinds for a damaged file
            raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        for i, r in enumerate(records):
            r["line"] = i
    elif suffix in (".jsonl", ".ndjson"):
        records = []
        for i, line in enumerate(_lines(path, "utf-8"), start=1):
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
        records, keys = _read_json(path, ds.get("records"))
        records = [dict(r, line=i) for i, r in enumerate(records)]
    else:
        raise DataError(f"{path}: unknown file type '{suffix}' (expected .csv, .tsv, .parquet, .jsonl or .json)")
    if not records:
        raise DataError(f"{path}: no rows")
    rows = _map_columns(path, records, ds)
    if keys is not None and "id" not in ds["columns"]:
        for row, key in zip(rows, keys):   # an object keyed by id: the key is the id
            row["id"] = key
    return rows


# The datasets library's builders that parse text files; the others (parquet, arrow) read binary formats, where
# a byte-order mark or a NUL byte means nothing, so the text checks do not apply to them.
HF_TEXT_BUILDERS = {"csv", "json", "text"}


def hf_arguments(ds: dict) -> dict:
    """The datasets.load_dataset arguments of an hf dataset, under the library's own names: `name` is its `path`
    (a hub id, a local folder, or a builder such as parquet with `data_files`), `config` its `name`."""
    arguments = {"path": ds["name"], "name": ds.get("config"), "revision": ds.get("revision"),
                 "data_files": ds.get("data_files")}
    return {key: value for key, value in arguments.items() if value is not None}


def load_hf(ds: dict) -> list[dict]:
    """A Hugging Face dataset, from the hub (needs a network), a local folder of data files (a README.md `configs:`
    block names its configs), or local files through a builder (`name: parquet` with `data_files`): the splits of
    `hf_split`, mapped like a table."""
    import datasets

    arguments = hf_arguments(ds)
    if Path(ds["name"]).exists() or "data_files" in arguments:
        # datasets decodes local text files itself and takes a UTF-16 file or NUL bytes for text (then fails on
        # "new columns" like 'i\x00d\x00', or with an error naming neither file nor encoding). Check each file
        # it will parse (the builder lists them without reading them) with the same check as the other loaders.
        try:
            builder = datasets.load_dataset_builder(**arguments)
        except (ValueError, FileNotFoundError) as e:   # an unknown config name, a data file that is not there
            raise DataError(f"{ds['name']}: {e}") from None
        if builder.name in HF_TEXT_BUILDERS:
            for data_files in builder.config.data_files.values():
                for f in data_files:
                    read_text(Path(f), "utf-8")
    rows = []
    where = ds["name"] + (f" (config {ds['config']})" if ds.get("config") else "")
    for split, hub_split in ds["hf_split"].items():
        part = datasets.load_dataset(**arguments, split=hub_split)
        records = [dict(r, line=i) for i, r in enumerate(part)]
        for r in _map_columns(Path(f"{where}[{hub_split}]"), records, ds):
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
    text = read_text(path, "utf-8")
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


def _read_json(path: Path, pointer: str | None = None) -> tuple[list[dict], list[str] | None]:
    """The records of a JSON file: the list (or the object keyed by id) at `pointer` (RFC 6901; None: the
    whole document, which must then be a list). Returns the records and, for an object, their keys."""
    def refuse_repeated_keys(pairs):
        # json.loads would keep the last of two equal keys, silently losing a row of an object keyed by id.
        obj = {}
        for key, value in pairs:
            if key in obj:
                raise DataError(f"{path}: key '{key}' appears twice in one JSON object")
            obj[key] = value
        return obj

    try:
        data = json.loads(read_text(path, "utf-8"), object_pairs_hook=refuse_repeated_keys)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    if pointer is None:
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects, got a {type(data).__name__} (with loader "
                            f"table, the dataset key `records` takes the JSON pointer of records nested inside)")
        items, keys = data, None
    else:
        node = resolve_json_pointer(data, pointer, path)
        if isinstance(node, list):
            items, keys = node, None
        elif isinstance(node, dict):
            items, keys = list(node.values()), list(node)
        else:
            raise DataError(f"{path}: JSON pointer '{pointer}' (config key records) points at a "
                            f"{_json_type(node)}; expected a list of objects or an object of objects keyed by id")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            which = f"item {i}" + (f" (key '{keys[i]}')" if keys else "") + (f" of '{pointer}'" if pointer else "")
            raise DataError(f"{path}, {which}: expected an object, got {type(item).__name__}")
    return items, keys


def resolve_json_pointer(document, pointer: str, path: Path):
    """The node at `pointer` (RFC 6901): '' is the whole document, '/data/0' is key 'data', then item 0;
    in a key, '~1' stands for '/' and '~0' for '~'."""
    node, walked = document, ""
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        where = f"'{walked}'" if walked else "the top level"
        if isinstance(node, dict):
            if key not in node:
                known = ", ".join(f"'{k}'" for k in list(node)[:10])
                raise DataError(f"{path}: JSON pointer '{pointer}' (config key records) does not resolve: no key "
                                f"'{key}' in the object at {where} (keys: {known})")
            node = node[key]
        elif isinstance(node, list):
            # RFC 6901: an index is a decimal number without leading zeros.
            if not re.fullmatch(r"0|[1-9][0-9]*", key) or int(key) >= len(node):
                raise DataError(f"{path}: JSON pointer '{pointer}' (config key records) does not resolve: no "
                                f"item '{key}' in the list at {where}, which has {len(node)} items")
            node = node[int(key)]
        else:
            raise DataError(f"{path}: JSON pointer '{pointer}' (config key records) does not resolve: the value "
                            f"at {where} is a {_json_type(node)}, which has no '{key}'")
        walked += f"/{token}"
    return node


def _json_type(value) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


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
    where_file = str(raw_files(ds)[0]) if raw_files(ds) else ds.get("name", ds.get("path"))

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
        # Text files were scanned as they were decoded; Parquet, JSON escapes (\u0000) and hub data arrive here.
        control = first_control_character(text)
        if control:
            raise DataError(f"{where(r)}: {control} in the text")
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
    if "agreement" in rows[0]:
        columns["agreement"] = [r["agreement"] for r in rows]
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
