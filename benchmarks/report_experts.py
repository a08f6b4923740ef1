"""Summarise an expert set (accuracy per epoch, training time) into benchmarks/results/.

    make experts                                   # trains the experts of config/ipc10/bbc.yaml
    python benchmarks/report_experts.py --config config/ipc10/bbc.yaml

Reads the experts' manifest.json files (written by the training run itself, so the figures are
those of the run) and writes benchmarks/results/experts/<config>.json (e.g. experts/ipc10-bbc.json)
plus a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.config import load_config  # noqa: E402
from utils.experts import expert_set_dir, read_manifest  # noqa: E402
from utils.model import model_tag  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "ipc10" / "bbc.yaml"))
    a = p.parse_args()
    cfg = load_config(a.config)
    root = expert_set_dir(cfg)
    experts = []
    for k in range(cfg.pretrain.num_premodel):
        m = read_manifest(root, k)
        if m is None:
            raise SystemExit(f"expert {k} missing in {root}: run the expert stage first (make experts)")
        experts.append({"expert": k, "seed": m["seed"], "complete": m["complete"],
                        "history": m["history"], "train_seconds": m["train_seconds"]})
    world = 1
    args_log = root / "args.log"
    if args_log.is_file():
        import yaml
        world = yaml.safe_load(args_log.read_text()).get("world_size", 1)
    result = {"benchmark": "experts", "config": os.path.relpath(a.config, ROOT),
              "dataset": cfg.dataset.name, "model": model_tag(cfg.network),
              "epochs": cfg.pretrain.epochs, "lr": cfg.pretrain.lr,
              "max_length": cfg.dataset.max_length, "world_size": world,
              "date": time.strftime("%Y-%m-%d"), "experts": experts}
    stem = os.path.relpath(a.config, ROOT / "config").removesuffix(".yaml").replace(os.sep, "-")
    out = ROOT / "benchmarks" / "results" / "experts" / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| expert | seed | " + " | ".join(f"epoch {h['epoch']} acc" for h in experts[0]["history"])
          + " | training time (s) |")
    print("|---" * (3 + len(experts[0]["history"])) + "|")
    for e in experts:
        accs = " | ".join(f"{100 * h['accuracy']:.2f}%" for h in e["history"])
        print(f"| {e['expert']} | {e['seed']} | {accs} | {e['train_seconds']:.0f} |")
    print(f"written {out}")


if __name__ == "__main__":
    main()
