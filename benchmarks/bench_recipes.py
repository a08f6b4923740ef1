"""Is a set's lead robust to the user's training recipe? One set and the real subsets, each
trained under several recipes with the same seeds.

    python benchmarks/bench_recipes.py --config config/ipc1/bbc.yaml --set_path SYN.pth \
        [--baselines random,herding,kcenter,kmeans] [--num_eval 5] \
        [--recipe NAME:steps=300,lr=5e-5 ...] [--set section.key=value ...] [--out FILE.json]

The evaluation protocol trains every classifier one way (`evaluate.steps` AdamW steps at
`evaluate.lr`, batch `evaluate.batch_size`); a user trains their own way. Each recipe replaces
some of those `evaluate` options and nothing else: the same set, the same real subsets (picked
once, on the config's feature expert), the same evaluation seeds, hard labels. Default recipes:

- `protocol`: the config's own evaluate settings;
- `high_lr`: the same steps at lr 3e-4;
- `long_low_lr`: 300 steps at lr 5e-5.

Per recipe: every method's test accuracy (mean ± std over `num_eval` runs, ddof 0), the best real
subset, the set's lead over it and the verdict rule of the quality table (`yes` when the lead
exceeds the larger std, `ahead, within std`, `no`). The set is recipe-robust when its verdict is
the same sign (ahead) under every recipe. Writes
benchmarks/results/eval/recipes_<dataset>_ipc<ipc>.json (after each recipe, so an interrupted run
keeps what it measured).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout

from benchmarks.common import EVAL, load_run, machine_info  # noqa: E402
from benchmarks.report_quality import verdict  # noqa: E402
from evaluation.protocol import evaluate_baseline, evaluate_synthetic, make_context  # noqa: E402
from evaluation.selectors import load_feature_expert, needs_features  # noqa: E402
from utils.coreset import expert_features  # noqa: E402
from utils.experts import dataset_tag, ensure_experts  # noqa: E402
from utils.io import atomic_write_json  # noqa: E402
from utils.synset import load_synset  # noqa: E402

DEFAULT_RECIPES: Dict[str, dict] = {"protocol": {}, "high_lr": {"lr": 3e-4},
                                    "long_low_lr": {"steps": 300, "lr": 5e-5}}
RECIPE_KEYS = {"steps": int, "lr": float, "batch_size": int, "weight_decay": float}


def parse_recipe(text: str) -> Tuple[str, dict]:
    """'NAME:steps=300,lr=5e-5' -> ('NAME', {'steps': 300, 'lr': 5e-05}); 'NAME:' is the protocol."""
    name, sep, body = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--recipe {text!r}: write NAME:key=value,... (keys {sorted(RECIPE_KEYS)})")
    changes = {}
    for part in filter(None, body.split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in RECIPE_KEYS:
            raise SystemExit(f"--recipe {text!r}: {part!r} is not key=value with a key of "
                             f"{sorted(RECIPE_KEYS)}")
        try:
            changes[key] = RECIPE_KEYS[key](value)
        except ValueError:
            raise SystemExit(f"--recipe {text!r}: {key} must be {RECIPE_KEYS[key].__name__}, "
                             f"got {value!r}") from None
    return name, changes


def compact(entry: dict) -> dict:
    """A results entry without its per-run curves (the JSON stays readable)."""
    keep = ("method", "mean", "std", "num_eval", "n_train", "steps", "metrics")
    return {**{k: entry[k] for k in keep if k in entry},
            "runs": [r["accuracy"] for r in entry.get("runs", [])],
            "seeds": [r["seed"] for r in entry.get("runs", [])]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="The config the set was condensed with.")
    p.add_argument("--set_path", required=True, help="The condensed set (syn_data_<iter>.pth).")
    p.add_argument("--baselines", default="random,herding,kcenter,kmeans")
    p.add_argument("--num_eval", type=int, default=None, help="Runs per row (default: the config's).")
    p.add_argument("--recipe", action="append", default=None, metavar="NAME:key=value,...",
                   help=f"A training recipe (keys {sorted(RECIPE_KEYS)}); repeat for more. Default: "
                        + "; ".join(f"{k}: {v or 'the config'}" for k, v in DEFAULT_RECIPES.items()))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default=None,
                   help="Output JSON (default benchmarks/results/eval/recipes_<dataset>_ipc<ipc>.json).")
    a = p.parse_args(argv)
    recipes = dict(parse_recipe(r) for r in a.recipe) if a.recipe else DEFAULT_RECIPES

    cfg, env, data = load_run(a.config, a.overrides, a.num_eval)
    syn = load_synset(a.set_path)
    out = Path(a.out) if a.out else EVAL / f"recipes_{dataset_tag(cfg)}_ipc{cfg.condense.ipc}.json"
    baselines = [b for b in a.baselines.split(",") if b and b != "none"]
    if not baselines:
        raise SystemExit("--baselines: name at least one real subset to compare with")
    ensure_experts(cfg, env, data)
    features = None
    if any(needs_features(b) for b in baselines):       # picked once, shared by every recipe
        expert = load_feature_expert(cfg, data.dataset.nclass, env.device, data.tokenizer.vocab_size)
        features = expert_features(expert, data.train.attention_mask, cfg.evaluate.eval_batch_size,
                                   env.device, input_ids=data.train.input_ids)
    ctx = make_context(cfg, env, data)
    rows: List[dict] = []
    for name, changes in recipes.items():
        ev = dataclasses.replace(cfg.evaluate, **changes)
        cfg_r = dataclasses.replace(cfg, evaluate=ev)
        ctx_r = dataclasses.replace(ctx, cfg=cfg_r)
        entries = [evaluate_synthetic(cfg_r, env, data, syn, source=str(a.set_path), ctx=ctx_r)]
        entries += [evaluate_baseline(ctx_r, b, features) for b in baselines]
        synthetic, real = entries[0], entries[1:]
        best = max(real, key=lambda e: e["mean"])
        rows.append({"recipe": name, "changes": changes, "steps": ev.steps, "lr": ev.lr,
                     "batch_size": ev.batch_size, "weight_decay": ev.weight_decay,
                     "entries": [compact(e) for e in entries], "best_real": best["method"],
                     "lead": synthetic["mean"] - best["mean"], "verdict": verdict(synthetic, best)})
        print(f"{name:<12} steps {ev.steps} lr {ev.lr:g}: synthetic {100 * synthetic['mean']:.2f} ± "
              f"{100 * synthetic['std']:.2f}, best real {best['method']} {100 * best['mean']:.2f} ± "
              f"{100 * best['std']:.2f} -> {rows[-1]['verdict']}", flush=True)
        if env.is_main:
            atomic_write_json(out, {
                "benchmark": "recipes", "config": a.config, "set_path": str(a.set_path),
                "dataset": dataset_tag(cfg), "ipc": cfg.condense.ipc,
                "set_iteration": syn["meta"].get("iteration"), "labels": "hard",
                "num_eval": cfg.evaluate.num_eval, "baselines": baselines, "machine": machine_info(),
                "command": "python benchmarks/bench_recipes.py " + " ".join(
                    argv if argv is not None else sys.argv[1:]),
                "complete": len(rows) == len(recipes),
                "recipe_robust": all(r["lead"] > 0 for r in rows) if len(rows) == len(recipes) else None,
                "rows": rows})
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
