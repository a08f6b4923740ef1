"""What a condensed set reveals of its training texts: how close each synthetic sequence, read
back as its nearest vocabulary tokens (as the `_preview.txt` does), is to the closest real
training text of its class.

    python benchmarks/bench_privacy.py --config config/ipc1/bbc.yaml \
        --set_file random=results/.../syn_data_150.pth --set_file noise=results/.../syn_data_150.pth \
        [--out benchmarks/results/privacy/bbc_ipc1.json]

For every synthetic sequence: its nearest token at each unmasked position (special tokens
dropped), then against each real training text of its class, tokenised by the same tokenizer
and `max_length`:
- `positional_match`: the share of the sequence's positions whose token equals the real text's
  token at the same position (1.0 = a verbatim copy of that text's first `max_length` tokens);
- `token_overlap`: the share of the sequence's distinct tokens that occur anywhere in the real
  text (order ignored);
each the best over the class's real texts. A sequence is a near copy when its best positional
match is at least `--near` (default 0.9). Written to benchmarks/results/privacy/ by default.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine_info  # noqa: E402


def best_matches(syn_ids, syn_mask, real_ids, real_mask, special: set) -> tuple:
    """Best positional match and token overlap of one synthetic sequence against real texts.

    syn_ids, syn_mask  # [L]      real_ids, real_mask  # [M, L]
    """
    import torch

    keep = syn_mask.bool() & ~torch.isin(syn_ids, torch.tensor(sorted(special)))
    if not keep.any():
        return 0.0, 0.0
    same = (real_ids == syn_ids.unsqueeze(0)) & keep.unsqueeze(0)           # [M, L]
    positional = same.sum(1).float() / keep.sum()                           # [M]
    mine = set(syn_ids[keep].tolist())
    overlaps = [len(mine & set(r[m.bool()].tolist())) / len(mine) for r, m in zip(real_ids, real_mask)]
    return float(positional.max()), float(max(overlaps))


def measure(cfg, set_path: str, near: float) -> dict:
    import torch
    from transformers import AutoModel

    from utils.data import load_text_dataset, tokenize_dataset
    from utils.model import load_tokenizer, resolve_model_path
    from utils.text_sets import nearest_tokens

    tokenizer = load_tokenizer(cfg.network)
    table = AutoModel.from_pretrained(resolve_model_path(cfg.network.model_path)
                                      ).get_input_embeddings().weight.detach()
    ds = load_text_dataset(cfg.dataset)
    train, _ = tokenize_dataset(ds, tokenizer, cfg.dataset.max_length, cfg.dataset.cache_dir)
    syn = torch.load(set_path, map_location="cpu", weights_only=True)
    ids = nearest_tokens(syn["inputs_embeds"], table)                       # [N, L]
    special = set(tokenizer.all_special_ids)
    rows = []
    for n in range(ids.shape[0]):
        c = int(syn["class_of"][n])
        idx = train.class_indices[c]
        pos, ovl = best_matches(ids[n], syn["attention_mask"][n], train.input_ids[idx],
                                train.attention_mask[idx], special)
        rows.append({"class": ds.class_names[c], "positional_match": round(pos, 4),
                     "token_overlap": round(ovl, 4)})
    pos = [r["positional_match"] for r in rows]
    ovl = [r["token_overlap"] for r in rows]
    meta = syn.get("meta") or {}
    return {"path": set_path, "iteration": meta.get("iteration"), "sequences": len(rows),
            "init": ((meta.get("config") or {}).get("condense") or {}).get("init"),
            "positional_match": {"mean": sum(pos) / len(pos), "min": min(pos), "max": max(pos)},
            "token_overlap": {"mean": sum(ovl) / len(ovl), "min": min(ovl), "max": max(ovl)},
            "near_copies": sum(p >= near for p in pos), "rows": rows}


def main(argv: Optional[List[str]] = None) -> int:
    from utils.config import load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the config the sets were condensed with")
    p.add_argument("--set_file", action="append", required=True, metavar="NAME=PATH",
                   help="a set to measure, with the name it gets in the JSON (repeatable)")
    p.add_argument("--near", type=float, default=0.9)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    cfg = load_config(a.config)
    sets = {}
    for item in a.set_file:
        name, _, path = item.partition("=")
        sets[name] = measure(cfg, path, a.near)
        print(name, {k: v for k, v in sets[name].items() if k != "rows"}, flush=True)
    out = a.out or RESULTS / "privacy" / f"{cfg.dataset.name}_ipc{cfg.condense.ipc}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "privacy", "config": a.config, "dataset": cfg.dataset.name,
              "ipc": cfg.condense.ipc, "max_length": cfg.dataset.max_length, "near": a.near,
              **machine_info(), "sets": sets}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
