"""The synthetic-set file format: the one place that builds, saves, loads, checks and decodes it.

A set (`syn_data_<iter>.pth`, loadable with `torch.load(weights_only=True)`) is a plain dict:

    inputs_embeds  [N, L, H] float32   learnt word embeddings (BERT adds positions inside)
    attention_mask [N, L] long
    labels         [N] long (class index), or [N, C] float (multi-label sets, or soft labels)
    class_of       [N] long            the class each sequence was condensed for
    meta           dict                see `make_meta`; `format_version` says which layout

N = len(classes) * ipc, class-major order. With `factor > 1` and decode_type 'multi', each stored
sequence holds `factor` segments of length L // factor, each decoded into its own example.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from utils.errors import UserError
from utils.io import atomic_torch_save, safe_torch_load
from utils.synset_io import save_synset_portable
from utils.training import Examples

FORMAT_VERSION = 1
LARGE_SET = 2000            # sequences; saving a set this large is announced in the log
REQUIRED_KEYS = ("inputs_embeds", "attention_mask", "labels", "class_of", "meta")


class SyntheticDataError(UserError):
    """A saved synthetic set is malformed or does not fit the current configuration."""


@dataclass
class ClassData:
    """One class's synthetic sequences."""
    embeds: torch.Tensor   # [ipc, L, H] (a leaf tensor with requires_grad while condensing)
    mask: torch.Tensor     # [ipc, L] long
    labels: torch.Tensor   # [ipc] long, or [ipc, C] float


def segment_length(max_length: int, factor: int) -> int:
    return max_length // factor


def decode(data: ClassData, factor: int, decode_type: str
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training examples of one class: 'single' -> the sequences as they are;
    'multi' -> each sequence cut into `factor` segments [ipc * factor, L // factor, H]."""
    if decode_type == "single" or factor == 1:
        return data.embeds, data.mask, data.labels
    ipc, L, H = data.embeds.shape
    seg = segment_length(L, factor)
    embeds = data.embeds[:, :seg * factor].reshape(ipc * factor, seg, H)
    mask = data.mask[:, :seg * factor].reshape(ipc * factor, seg)
    labels = data.labels.repeat_interleave(factor, dim=0)
    return embeds, mask, labels


def make_meta(*, dataset: str, class_names: Sequence[str], ipc: int, iteration: int,
              model: str, model_path: str, max_length: int, hidden_size: int, factor: int,
              decode_type: str, multilabel: bool, method: str, config: Optional[dict] = None,
              tokens: bool = False) -> dict:
    """The set's metadata (plain values only): what it was condensed from and how to decode it.
    `tokens`: every position is exactly a vocabulary embedding (condense.tokens)."""
    return {"dataset": dataset, "class_names": list(class_names), "nclass": len(class_names),
            "ipc": int(ipc), "iteration": int(iteration), "model": model, "model_path": model_path,
            "max_length": int(max_length), "hidden_size": int(hidden_size), "factor": int(factor),
            "decode_type": decode_type, "multilabel": bool(multilabel), "method": method,
            "tokens": bool(tokens), "config": config or {}}


def build_synset(per_class: Dict[int, dict], classes: Sequence[int], meta: dict) -> dict:
    """The saved-file dict from per-class data ({class: {embeds, mask, labels}}), class-major."""
    return {"inputs_embeds": torch.cat([per_class[c]["embeds"] for c in classes]).detach().float().cpu(),
            "attention_mask": torch.cat([per_class[c]["mask"] for c in classes]).long().cpu(),
            "labels": torch.cat([per_class[c]["labels"] for c in classes]).cpu(),
            "class_of": torch.cat([torch.full((len(per_class[c]["embeds"]),), c, dtype=torch.long)
                                   for c in classes]),
            "meta": {**meta, "format_version": FORMAT_VERSION, "classes": list(classes)}}


def split_by_class(syn: dict) -> Dict[int, dict]:
    """{class: {embeds, mask, labels}} of a set, in class order."""
    out = {}
    for c in sorted(set(syn["class_of"].tolist())):
        sel = syn["class_of"] == c
        out[c] = {"embeds": syn["inputs_embeds"][sel], "mask": syn["attention_mask"][sel],
                  "labels": syn["labels"][sel]}
    return out


def save_synset(syn: dict, path: str | Path) -> None:
    n = int(syn["class_of"].numel())
    if n >= LARGE_SET:           # saving and previewing a large set takes minutes: say so first
        logging.getLogger(__name__).info("writing %s (%d sequences) and its preview; a set this "
                                         "large takes a while to save", path, n)
    atomic_torch_save(syn, path)
    save_synset_portable(syn, path)    # also <stem>.safetensors + <stem>.json (utils/synset_io.py)


def validate(syn, source: str) -> dict:
    """The structure every set has, whatever run it is used in."""
    if not isinstance(syn, dict) or any(k not in syn for k in REQUIRED_KEYS):
        raise SyntheticDataError(f"{source}: not a textcondense synthetic set (needs keys "
                                 f"{REQUIRED_KEYS})")
    version = int(syn["meta"].get("format_version", 1))
    if version > FORMAT_VERSION:
        raise SyntheticDataError(f"{source}: format version {version} is newer than this "
                                 f"textcondense reads ({FORMAT_VERSION}); upgrade textcondense")
    N = syn["class_of"].numel()
    if N == 0:
        raise SyntheticDataError(f"{source}: the set is empty")
    if syn["inputs_embeds"].dim() != 3 or any(
            syn[k].shape[0] != N for k in ("inputs_embeds", "attention_mask", "labels")):
        raise SyntheticDataError(f"{source}: inconsistent shapes (inputs_embeds "
                                 f"{tuple(syn['inputs_embeds'].shape)}, attention_mask "
                                 f"{tuple(syn['attention_mask'].shape)}, labels "
                                 f"{tuple(syn['labels'].shape)}, {N} class_of entries)")
    check_labels_and_masks(syn, source)
    if not bool(torch.isfinite(syn["inputs_embeds"]).all()):
        raise SyntheticDataError(f"{source}: the set holds NaN/Inf values and can be neither "
                                 f"trained on nor evaluated; use an earlier syn_data_<iter>.pth")
    return syn


def check_labels_and_masks(syn: dict, source: str) -> None:
    """A (hand-edited) set whose labels disagree with `class_of`, or with a sequence whose
    attention mask is all zeros (no token the model would read), is refused."""
    labels, class_of, mask = syn["labels"], syn["class_of"], syn["attention_mask"]
    if labels.dim() == 1:
        wrong = torch.nonzero(labels.long() != class_of.long()).flatten()
    elif labels.dim() == 2 and bool(((labels == 0) | (labels == 1)).all()) and \
            int(class_of.max()) < labels.shape[1] and int(class_of.min()) >= 0:
        # multi-hot labels: each sequence must carry the class it was condensed for
        wrong = torch.nonzero(labels[torch.arange(len(class_of)), class_of.long()] != 1).flatten()
    else:
        wrong = torch.zeros(0, dtype=torch.long)      # soft labels: any distribution is allowed
    if wrong.numel():
        i = int(wrong[0])
        raise SyntheticDataError(f"{source}: {wrong.numel()} sequences have labels that disagree "
                                 f"with class_of (first: sequence {i}, label "
                                 f"{labels[i].tolist()} vs class {int(class_of[i])}); the set was "
                                 f"edited: use the file as condense_script_text.py wrote it")
    empty = torch.nonzero(mask.sum(dim=-1) == 0).flatten() if mask.dim() == 2 else mask[:0]
    if empty.numel():
        raise SyntheticDataError(f"{source}: {empty.numel()} sequences have an all-zero "
                                 f"attention_mask (first: sequence {int(empty[0])}), so the model "
                                 f"would read no token of them; use the file as "
                                 f"condense_script_text.py wrote it")


def preflight_load(path: Optional[str]) -> None:
    """Collective, before any expensive work (e.g. expert training) of a run started from a saved
    set (`--init load`): rank 0 reads and validates the file; a problem is raised on every rank
    (SyntheticDataError's message)."""
    from utils.distributed import main_then_broadcast

    main_then_broadcast(lambda: load_synset(path) and None)


def load_synset(path: Optional[str]) -> dict:
    """Read and validate a saved set (never unpickles arbitrary objects)."""
    if not path:
        raise SyntheticDataError("no synthetic set given (--load_path FILE)")
    if not Path(path).is_file():
        raise SyntheticDataError(f"synthetic set not found: {path} (--load_path must point to a "
                                 f"distilled_data/syn_data_<iter>.pth written by "
                                 f"condense_script_text.py)")
    return validate(safe_torch_load(path), str(path))


def check_fits(syn: dict, source: str, *, class_names: Optional[Sequence[str]] = None,
               hidden_size: Optional[int] = None, ipc: Optional[int] = None,
               max_length: Optional[int] = None, hidden_hint: str = "",
               all_classes: bool = False) -> None:
    """The set fits a run: the same class names, and (when given) hidden size, ipc, max_length;
    with `all_classes`, sequences of every class. Every mismatch is listed in one error."""
    problems = []
    names = list(syn["meta"].get("class_names", []))
    if class_names is not None and names != list(class_names):
        problems.append(f"its classes {names} differ from the dataset's {list(class_names)}")
    elif class_names is not None and int(syn["class_of"].max()) >= len(class_names):
        problems.append(f"class indices beyond the dataset's {len(class_names)}")
    if all_classes and class_names is not None:
        missing = sorted(set(range(len(class_names))) - set(syn["class_of"].tolist()))
        if missing:
            problems.append(f"it has no sequences of the classes "
                            f"{[class_names[c] for c in missing]}")
    N, L, H = syn["inputs_embeds"].shape
    if hidden_size is not None and H != hidden_size:
        problems.append(f"hidden size {H}, but the model has hidden size {hidden_size}{hidden_hint}")
    if max_length is not None and L != max_length:
        problems.append(f"max_length {L} vs the config's {max_length}")
    if ipc is not None and any(len(d["embeds"]) != ipc for d in split_by_class(syn).values()):
        problems.append(f"ipc {syn['meta'].get('ipc')} vs the config's {ipc}")
    if problems:
        raise SyntheticDataError(f"{source} does not fit this run: " + "; ".join(problems)
                                 + ". Use it with the config it was condensed with.")


def to_examples(syn: dict) -> Examples:
    """The set's training examples, class by class ('multi' sequences cut into segments)."""
    meta = syn.get("meta", {})
    factor, decode_type = int(meta.get("factor", 1)), str(meta.get("decode_type", "single"))
    embeds, masks, labels, class_of = [], [], [], []
    for c, d in split_by_class(syn).items():
        e, m, y = decode(ClassData(d["embeds"], d["mask"], d["labels"]), factor, decode_type)
        embeds.append(e.detach().float())
        masks.append(m.long())
        labels.append(y)
        class_of.append(torch.full((len(e),), c, dtype=torch.long))
    return Examples(torch.cat(masks), torch.cat(labels), inputs_embeds=torch.cat(embeds),
                    class_of=torch.cat(class_of))
