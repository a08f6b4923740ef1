"""A set trained the stock Hugging Face way vs the project's evaluation protocol.

    python benchmarks/bench_stock_hf.py --config_path demo \
        --set results/condense/bbc/ipc1/demo/distilled_data/syn_data_100.pth --runs 5

For the synthetic set and the random and herding real subsets of the same size (the project's
own selections: `evaluation.selectors.select_baseline`, seed run.seed, herding on the features of
expert evaluate.feature_expert), two ways of training a fresh classifier:

- stock: `AutoModelForSequenceClassification` of the set's encoder (BERT's pooler, tanh dense on
  [CLS], then a fresh linear head) trained with the HF `Trainer` (examples/train_hf_on_set.py:
  AdamW, linear decay to 0, no warm-up, clipping 1.0), `evaluate.steps` steps at `evaluate.lr`,
  batch `evaluate.batch_size` (capped at the set size), Trainer seeds 0..runs-1; real subsets
  train on their token ids, the set on its inputs_embeds;
- protocol: the evaluate stage (`textcondense evaluate`: the project's TextClassifier, pooling
  network.pooling into dropout + a linear head, constant lr, same steps/batch/lr), runs seeded
  by the protocol (`derive_seed(run.seed, 'evaluate', i)`, i < runs).

Both are scored on the whole test split. Writes benchmarks/results/eval/stock_hf_<dataset>_ipc<ipc>.json
with the command that made it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch
from transformers import AutoTokenizer, set_seed

import textcondense as tc
from evaluation.selectors import load_feature_expert, select_baseline
from utils.coreset import expert_features
from utils.runtime import load_data

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("train_hf_on_set", ROOT / "examples" / "train_hf_on_set.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def real_dataset(split, idx: torch.Tensor, class_names) -> datasets.Dataset:
    """Real rows `idx` of a tokenised split as a Trainer dataset (token ids)."""
    ds = datasets.Dataset.from_dict({"input_ids": split.input_ids[idx].tolist(),
                                     "attention_mask": split.attention_mask[idx].tolist(),
                                     "labels": split.labels[idx].tolist()})
    return ds.with_format("torch")


def summary(values) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.pstdev(values),   # ddof 0, as the protocol
            "runs": values}


def protocol_runs(a, methods, out_dir: Path) -> dict:
    """The evaluate stage itself (a subprocess): the set and/or baselines, `a.runs` runs each."""
    cmd = [sys.executable, "-m", "condense", "evaluate", "--config_path", a.config_path,
           "--num_eval", str(a.runs), "--output_dir", str(out_dir),
           "--set", f"evaluate.results_table={out_dir / 'results.md'}"]
    if "synthetic" in methods:
        cmd += ["--load_path", str(Path(a.set).resolve())]
    baselines = [m for m in methods if m != "synthetic"]
    if baselines:
        cmd += ["--baseline", ",".join(baselines)]
    for s in a.set_override:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, cwd=ROOT)
    out = {}
    for e in json.loads((out_dir / "eval" / "results.json").read_text()):
        method = e["method"] if e["method"] in baselines else "synthetic"
        out[method] = summary([r["accuracy"] for r in e["runs"]])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config_path", required=True)
    p.add_argument("--set", required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--methods", nargs="+", default=["synthetic", "random", "herding"])
    p.add_argument("--set_override", action="append", default=[], help="--set passed to the config")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    ex = _example()
    from utils.config import parse_set
    cfg = tc.load_config(a.config_path, [parse_set(s) for s in a.set_override])
    syn = tc.load_synset(a.set)
    meta = syn["meta"]
    data = load_data(cfg)
    names, ipc, ev = data.dataset.class_names, int(meta["ipc"]), cfg.evaluate
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / "eval" / \
        f"stock_hf_{cfg.dataset.name}_ipc{ipc}.json"
    result = {"benchmark": "stock_hf", "dataset": cfg.dataset.name, "ipc": ipc,
              "set": str(a.set), "set_iteration": meta.get("iteration"), "encoder": meta.get("model"),
              "test_rows": len(data.dataset.test_texts), "steps": ev.steps, "lr": ev.lr,
              "batch_size": ev.batch_size, "runs": a.runs, "std": "population (ddof 0)",
              "stock": {"how": "AutoModelForSequenceClassification (BERT pooler + fresh head), HF "
                               "Trainer: AdamW, linear decay, no warm-up, clip 1.0; seeds 0..runs-1"},
              "protocol": {"how": f"textcondense evaluate: TextClassifier ({cfg.network.pooling} "
                                  f"pooling, no pooler), constant lr, clip 1.0; protocol seeds"},
              "command": "python benchmarks/bench_stock_hf.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "complete": False}

    def write():          # after every block, so an interrupted run keeps what it measured
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    device = torch.device("cpu")
    model_dir = tc.resolve_model_path(meta["model_path"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    feats = None
    for method in a.methods:                  # per method: stock runs, then the protocol's
        if method == "synthetic":
            ds = tc.to_hf_dataset(syn)
        else:
            if method == "herding" and feats is None:
                expert = load_feature_expert(cfg, len(names), device, data.tokenizer.vocab_size)
                feats = expert_features(expert, data.train.attention_mask, ev.eval_batch_size,
                                        device, input_ids=data.train.input_ids)
            sel = select_baseline(method, data.train.labels, len(names), ipc, cfg.run.seed,
                                  feats if method == "herding" else None)
            ds = real_dataset(data.train, torch.cat(list(sel.values())), names)
        accs = []
        for seed in range(a.runs):
            set_seed(seed)
            model = ex.load_stock_model(model_dir, names)
            with tempfile.TemporaryDirectory() as tmp:
                ex.train(model, ds, tmp, ev.steps, ev.lr, ev.batch_size, seed, ev.weight_decay)
            accs.append(ex.accuracy(model, tokenizer, data.dataset.test_texts,
                                    data.dataset.test_labels, cfg.dataset.max_length))
            print(f"stock {method} seed {seed}: {accs[-1]:.4f}", flush=True)
            result["stock"][method] = summary(accs)
            write()
        with tempfile.TemporaryDirectory(prefix=f"stock_hf_protocol_{method}_") as tmp:
            result["protocol"].update(protocol_runs(a, [method], Path(tmp)))
        write()
        print(f"{method:<10} stock {100 * result['stock'][method]['mean']:.2f} ± "
              f"{100 * result['stock'][method]['std']:.2f}   protocol "
              f"{100 * result['protocol'][method]['mean']:.2f} ± "
              f"{100 * result['protocol'][method]['std']:.2f}", flush=True)
    done = {m for m in result["stock"] if m != "how"} & {m for m in result["protocol"] if m != "how"}
    result["complete"] = {"synthetic", "random", "herding"} <= done
    write()
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
