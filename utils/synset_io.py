"""Synthetic sets outside this project: a portable copy (safetensors + JSON) and a Hugging Face
`datasets.Dataset` view.

    from textcondense import load_synset, to_hf_dataset
    syn = load_synset("results/condense/.../distilled_data/syn_data_100.pth")   # or .safetensors
    ds = to_hf_dataset(syn)       # columns inputs_embeds [L, H], attention_mask [L], labels

Every saved set `syn_data_<iter>.pth` also has `syn_data_<iter>.safetensors` (the tensors:
inputs_embeds, attention_mask, labels, class_of) and `syn_data_<iter>.json` (the metadata: class
names, model, max_length, how to decode ...) beside it (`save_synset_portable`), readable without
torch.load and without this package (`safetensors.torch.load_file` + `json.load`).

A set's `inputs_embeds` live in the word-embedding space of the encoder it was condensed with
(meta `model_path`): train a model of that encoder on them (BERT adds the position and token-type
embeddings inside, as for token ids).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from utils.io import atomic_write, atomic_write_text

TENSOR_KEYS = ("inputs_embeds", "attention_mask", "labels", "class_of")


def portable_paths(path: Union[str, Path]) -> tuple[Path, Path]:
    """(<stem>.safetensors, <stem>.json) beside a set's path (any suffix)."""
    path = Path(path)
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def save_synset_portable(syn: dict, path: Union[str, Path]) -> tuple[Path, Path]:
    """Write the set as <stem>.safetensors + <stem>.json beside `path` (each atomically)."""
    from safetensors.torch import save_file

    tensors_path, meta_path = portable_paths(path)
    tensors = {k: syn[k].detach().contiguous().cpu() for k in TENSOR_KEYS}
    meta = dict(syn.get("meta", {}))
    atomic_write(tensors_path, lambda tmp: save_file(
        tensors, tmp, metadata={"format": "textcondense-synset",
                                "format_version": str(meta.get("format_version", 1))}))
    atomic_write_text(meta_path, json.dumps(meta, indent=2, default=str) + "\n")
    return tensors_path, meta_path


def read_portable(path: Union[str, Path]) -> dict:
    """The set dict (as `syn_data_<iter>.pth` holds it) from <stem>.safetensors + <stem>.json."""
    from safetensors.torch import load_file

    from utils.synset import SyntheticDataError

    tensors_path, meta_path = portable_paths(path)
    for p in (tensors_path, meta_path):
        if not p.is_file():
            raise SyntheticDataError(f"synthetic set file missing: {p} (a portable set is "
                                     f"<name>.safetensors with <name>.json beside it)")
    try:
        tensors = load_file(str(tensors_path))
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise SyntheticDataError(f"{tensors_path}: not a readable portable set ({type(exc).__name__}: "
                                 f"{exc})") from None
    missing = [k for k in TENSOR_KEYS if k not in tensors]
    if missing:
        raise SyntheticDataError(f"{tensors_path}: not a textcondense synthetic set (missing "
                                 f"{missing})")
    return {**{k: tensors[k] for k in TENSOR_KEYS}, "meta": meta}


def load_synset(path: Union[str, Path]) -> dict:
    """Read and check a saved set: `syn_data_<iter>.pth` (torch.load with weights_only) or its
    portable copy `syn_data_<iter>.safetensors` (+ .json). Returns the set dict: inputs_embeds
    [N, L, H], attention_mask [N, L], labels [N] (or [N, C]), class_of [N], meta."""
    from utils.synset import load_synset as load_pth
    from utils.synset import validate

    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return validate(read_portable(path), str(path))
    return load_pth(str(path))


def to_hf_dataset(syn: Union[dict, str, Path], with_class_of: bool = False):
    """The set's training examples as a `datasets.Dataset` in torch format: `inputs_embeds`
    [L, H] float32, `attention_mask` [L] int64 and `labels` (a ClassLabel with the class names;
    a float vector for multi-label or soft-label sets), ready for a Hugging Face `Trainer` with
    a model of the set's encoder. Packed sets ('multi' decoding) give one row per segment."""
    import datasets

    from utils.synset import to_examples

    if not isinstance(syn, dict):
        syn = load_synset(syn)
    ex = to_examples(syn)
    meta = syn.get("meta", {})
    names = list(meta.get("class_names") or [str(c) for c in range(int(ex.class_of.max()) + 1)])
    _, L, H = ex.inputs_embeds.shape
    columns = {"inputs_embeds": ex.inputs_embeds.float().numpy(),
               "attention_mask": ex.attention_mask.long().numpy()}
    features = {"inputs_embeds": datasets.Array2D(shape=(L, H), dtype="float32"),
                "attention_mask": datasets.Sequence(datasets.Value("int64"), length=L)}
    if ex.labels.dim() == 1:
        columns["labels"] = ex.labels.long().numpy()
        features["labels"] = datasets.ClassLabel(names=names)
    else:
        columns["labels"] = ex.labels.float().numpy()
        features["labels"] = datasets.Sequence(datasets.Value("float32"), length=len(names))
    if with_class_of:
        columns["class_of"] = ex.class_of.long().numpy()
        features["class_of"] = datasets.ClassLabel(names=names)
    ds = datasets.Dataset.from_dict({k: list(v) for k, v in columns.items()},
                                    features=datasets.Features(features))
    return ds.with_format("torch")


def synset_summary(syn: dict) -> Optional[str]:
    """One line: how many sequences of which shape, condensed from what."""
    meta = syn.get("meta", {})
    n, L, H = syn["inputs_embeds"].shape
    return (f"{n} sequences x {L} tokens x {H} dims, {meta.get('nclass', '?')} classes "
            f"({', '.join(meta.get('class_names', []))}), ipc {meta.get('ipc')}, encoder "
            f"{meta.get('model', '?')}, iteration {meta.get('iteration')}")

