"""Sets as text: a synthetic set decoded to its nearest tokens, saved as plain JSON lines.

A set is `inputs_embeds` in one encoder's embedding space; to train any other model (another
tokenizer, another architecture) it must become text. `decode_synset` maps every unmasked position
to the vocabulary embedding nearest in cosine (as the `_preview.txt` does) and detokenises the
sequence; `save_text_set` writes one `{"text", "label", "class_name"}` object per line (readable by
`datasets.load_dataset("json", ...)`, pandas, and this project's own table reader), plus a
`<name>.meta.json` that records where it came from and whether any row is a verbatim copy of a real
training text (`copied_rows`; `no_real_row_copied: true` only when none is).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from utils.config_schema import NetworkConfig
from utils.io import atomic_write_json, atomic_write_text


@torch.no_grad()
def nearest_tokens(embeds: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index of the vocabulary embedding nearest (cosine) to each position.

    embeds  # [N, L, H]   table  # [V, H]   ->  [N, L]
    """
    e = F.normalize(embeds.float(), dim=-1)
    t = F.normalize(table.float(), dim=-1)
    return torch.stack([(x @ t.T).argmax(-1) for x in e])


@dataclass
class TextSet:
    """Texts with their class (index) and class names; `source` says where they came from."""
    texts: List[str]
    labels: List[int]
    class_names: List[str]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)


def normalise(text: str) -> str:
    """The form in which texts are compared for verbatim copies (case and spacing folded)."""
    return " ".join(text.lower().split())


def decode_synset(syn: dict, tokenizer, table: torch.Tensor, class_names: Sequence[str]) -> TextSet:
    """The set's sequences as text: nearest tokens of the unmasked positions, special tokens
    ([CLS], [SEP], [PAD]) dropped, detokenised by the tokenizer that made the set."""
    ids = nearest_tokens(syn["inputs_embeds"], table.cpu())                      # [N, L]
    special = set(tokenizer.all_special_ids)
    texts, labels = [], []
    for n in range(ids.shape[0]):
        keep = syn["attention_mask"][n].bool()
        tokens = [t for t in ids[n][keep].tolist() if t not in special]
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
        labels.append(int(syn["class_of"][n]))
    meta = syn.get("meta", {})
    return TextSet(texts, labels, list(class_names),
                   source=f"decoded {meta.get('dataset', '?')} ipc {meta.get('ipc', '?')} set, "
                          f"iteration {meta.get('iteration', '?')}, model {meta.get('model', '?')}")


def copied_rows(texts: Sequence[str], real_texts: Sequence[str], tokenizer=None) -> List[int]:
    """Rows of `texts` equal to a real text after normalisation. With `tokenizer`, a real text is
    compared as the tokenizer round-trips it (lower-cased word pieces, truncation aside), so a set
    that decodes back to a real article is caught even though spacing and case changed."""
    real = {normalise(t) for t in real_texts}
    if tokenizer is not None:
        real |= {normalise(tokenizer.decode(tokenizer(t, add_special_tokens=False, truncation=True,
                                                       max_length=512)["input_ids"]))
                 for t in real_texts}
    return [i for i, t in enumerate(texts) if normalise(t) in real]


def prefix_copied_rows(texts: Sequence[str], real_texts: Sequence[str], tokenizer,
                       min_tokens: int = 16) -> List[int]:
    """Rows whose text is the start of a real text (a truncated copy: sets are `max_length`
    tokens long, articles are longer), compared on the tokenizer's round-trip."""
    starts = {}
    for t in real_texts:
        ids = tokenizer(t, add_special_tokens=False, truncation=True, max_length=512)["input_ids"]
        starts[normalise(tokenizer.decode(ids))] = True
    real = list(starts)
    out = []
    for i, t in enumerate(texts):
        n = normalise(t)
        if len(n.split()) >= min_tokens // 2 and any(r.startswith(n) for r in real):
            out.append(i)
    return out


def save_text_set(ts: TextSet, path: str | Path, real_texts: Optional[Sequence[str]] = None,
                  tokenizer=None) -> Path:
    """Write `ts` as JSON lines (atomic) and its `.meta.json`; with `real_texts`, the meta
    records which rows are verbatim (or truncated) copies of real training texts."""
    path = Path(path)
    rows = [json.dumps({"text": t, "label": y, "class_name": ts.class_names[y]}, ensure_ascii=False)
            for t, y in zip(ts.texts, ts.labels)]
    atomic_write_text(path, "\n".join(rows) + "\n")
    meta = {**ts.meta, "rows": len(ts), "source": ts.source, "class_names": ts.class_names}
    if real_texts is not None:
        exact = copied_rows(ts.texts, real_texts, tokenizer)
        prefix = prefix_copied_rows(ts.texts, real_texts, tokenizer) if tokenizer is not None else []
        copied = sorted(set(exact) | set(prefix))
        meta.update({"copied_rows": copied, "no_real_row_copied": not copied,
                     "copy_check": "exact or leading-prefix match against the training texts, "
                                   "after the tokenizer round-trip, case and spaces folded"})
    atomic_write_json(path.with_suffix(".meta.json"), meta)
    return path


def load_text_set(path: str | Path) -> TextSet:
    path = Path(path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    meta_path = path.with_suffix(".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    names = meta.get("class_names") or sorted({r["class_name"] for r in rows})
    return TextSet([r["text"] for r in rows], [int(r["label"]) for r in rows], list(names),
                   source=meta.get("source", str(path)), meta=meta)


def export_text(syn, path: str | Path, real_texts: Optional[Sequence[str]] = None) -> TextSet:
    """A saved set (a `load_synset` dict or its path) written as text for any model: JSON lines +
    `.meta.json` (`save_text_set`), decoded with the tokenizer and word-embedding table of the
    encoder that made it (`meta.model_path`). With `real_texts` (the training texts), the meta says
    whether any row copies one. A token-level set (`condense.tokens`) decodes exactly; any other
    set loses the embedding moves that decoding rounds away."""
    from transformers import AutoModel

    from utils.model import ModelError, load_tokenizer, resolve_model_path
    from utils.synset_io import load_synset

    if not isinstance(syn, dict):
        syn = load_synset(syn)
    meta = syn["meta"]
    if meta.get("model_path") in (None, "random"):
        raise ModelError("this set was condensed on a randomly initialised encoder: its embedding "
                         "table is not a model that can be loaded, so the set cannot be decoded")
    tokenizer = load_tokenizer(NetworkConfig(model_path=meta["model_path"]))
    table = AutoModel.from_pretrained(resolve_model_path(meta["model_path"])
                                      ).get_input_embeddings().weight.detach()
    ts = decode_synset(syn, tokenizer, table, meta["class_names"])
    ts.meta = {"from_set": meta.get("dataset"), "model": meta.get("model"),
               "iteration": meta.get("iteration"), "tokens": bool(meta.get("tokens", False)),
               "decoding": "exact (token-level set)" if meta.get("tokens") else
                           "nearest vocabulary token per position (cosine)"}
    save_text_set(ts, path, real_texts, tokenizer)
    return ts
