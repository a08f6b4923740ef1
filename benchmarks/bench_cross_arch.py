"""Sets that train other architectures: condensed on one encoder, trained on several.

    python benchmarks/bench_cross_arch.py --config config/ipc1/bbc.yaml --set_path SYN.pth \
        [--set_path "token set=TOKENS.pth" ...] [--models all-MiniLM-L6-v2 mpnet] \
        [--baselines random,herding,kmeans] [--num_eval 3] [--set section.key=value ...] [--out FILE.json]

The table users ask for. For every model in `--models`, with the evaluation protocol of the config
(same steps, learning rate, batch and seeds for every row; hard labels):
- `synthetic`: the set as `inputs_embeds` (only on an encoder of the set's hidden size and
  tokenizer: the one that made it);
- `synthetic as text`: the set decoded to its nearest tokens (`utils.text_sets`; the JSON lines
  and their verbatim-copy check are written beside the output), re-tokenised by each model;
- the same two rows for every further `--set_path NAME=PATH` (e.g. a token-level set,
  `condense.tokens`, whose text is its exact tokens), named NAME;
- the real subsets of `--baselines`, picked once (on the features of the config's feature expert,
  i.e. the encoder that made the set) and trained on each model through its own tokenizer.
MPNet comes from `make models`. Results: benchmarks/results/cross_arch/<dataset>_ipc<ipc>.json
(and the text set as <dataset>_ipc<ipc>_text.jsonl + .meta.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout

from benchmarks.common import RESULTS, load_run, machine_info  # noqa: E402
from evaluation.protocol import (  # noqa: E402
    evaluate_baseline,
    evaluate_runs,
    evaluate_synthetic,
    make_context,
    summarize,
)
from evaluation.results import add_gaps  # noqa: E402
from evaluation.selectors import load_feature_expert  # noqa: E402
from utils.coreset import expert_features  # noqa: E402
from utils.experts import dataset_tag, ensure_experts  # noqa: E402
from utils.io import atomic_write_json  # noqa: E402
from utils.model import load_tokenizer  # noqa: E402
from utils.synset import load_synset  # noqa: E402
from utils.text_sets import decode_synset, save_text_set  # noqa: E402
from utils.training import Examples  # noqa: E402

CROSS = RESULTS / "cross_arch"


def text_examples(texts, labels, tokenizer, max_length: int) -> Examples:
    """Texts tokenised by the model that trains on them  # input_ids [N, L]"""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    return Examples(enc["attention_mask"], torch.tensor(labels, dtype=torch.long),
                    input_ids=enc["input_ids"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="The config the set was condensed with.")
    p.add_argument("--set_path", required=True, action="append", metavar="[NAME=]PATH",
                   help="A condensed set (syn_data_<iter>.pth); repeat for more sets, each named "
                        "NAME in the rows (the first defaults to 'synthetic').")
    p.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2", "mpnet"],
                   help="Encoders to train on (aliases, folders or hub names).")
    p.add_argument("--baselines", default="random,herding,kmeans")
    p.add_argument("--num_eval", type=int, default=None, help="Runs per row (default: the config's).")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default=None, help="Output JSON (default under benchmarks/results/cross_arch/).")
    p.add_argument("--append", action="store_true",
                   help="Keep the rows of the other models already in the output JSON (made with "
                        "the same config and sets; these --set_path must be among them): one run "
                        "per model, e.g. a slower encoder with fewer --num_eval or baselines.")
    a = p.parse_args(argv)

    cfg, env, data = load_run(a.config, a.overrides, a.num_eval)
    nclass, names = data.dataset.nclass, list(data.dataset.class_names)
    out = Path(a.out) if a.out else CROSS / f"{dataset_tag(cfg)}_ipc{cfg.condense.ipc}.json"
    named = set_paths(a.set_path)
    earlier = earlier_rows(out, a, named) if a.append else None

    # each set as text, decoded with the word-embedding table of the experts that made it (as the
    # condensation's _preview.txt); the same expert's features pick the real subsets
    ensure_experts(cfg, env, data)
    expert = load_feature_expert(cfg, nclass, env.device, data.tokenizer.vocab_size)
    sets = []
    for i, (name, path) in enumerate(named):
        syn = load_synset(path)
        text = decode_synset(syn, data.tokenizer, expert.word_embeddings().weight.detach(), names)
        stem = out.stem + ("" if i == 0 else "_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_"))
        text_path = save_text_set(text, out.with_name(stem + "_text.jsonl"),
                                  real_texts=data.dataset.train_texts, tokenizer=data.tokenizer)
        print(f"{name} as text: {text_path}", flush=True)
        sets.append(NamedSet(name, path, syn, text, text_path))
    baselines = [b for b in a.baselines.split(",") if b and b != "none"]
    features = expert_features(expert, data.train.attention_mask, cfg.evaluate.eval_batch_size,
                               env.device, input_ids=data.train.input_ids) if baselines else None

    rows, timing = [], {}
    for model in a.models:
        start = time.time()
        cfg_m = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate,
                                                                      eval_model_path=model))
        ctx = make_context(cfg_m, env, data)
        # the context re-tokenises the data only for an encoder with another vocabulary
        same_vocab = ctx.train is data.train
        tok = data.tokenizer if same_vocab else load_tokenizer(dataclasses.replace(ctx.net,
                                                                                   tokenizer_path=None))
        entries = []
        for st in sets:
            if same_vocab and ctx.hidden_size == st.syn["inputs_embeds"].shape[-1]:
                entry = evaluate_synthetic(cfg_m, env, data, st.syn, source=str(st.path), ctx=ctx)
                entries.append({**entry, "method": st.name})
            ts = text_examples(st.text.texts, st.text.labels, tok, cfg.dataset.max_length)
            label = f"{st.name} as text"
            runs = evaluate_runs(ctx, label, ts, cfg.evaluate.steps)
            entries.append(summarize(ctx, label, runs, ts, cfg.evaluate.steps, cfg.condense.ipc,
                                     source=str(st.text_path)))
        for b in baselines:
            entries.append(evaluate_baseline(ctx, b, features))
        add_gaps(entries, [])
        for e in entries:
            print(f"{e['model']:>32}  {e['method']:<18} {100 * e['mean']:6.2f} ± {100 * e['std']:.2f}",
                  flush=True)
        rows.extend(entries)
        timing[model] = round(time.time() - start, 1)
        write(out, a, argv, cfg, sets, timing, rows, complete=model == a.models[-1], earlier=earlier)
    return 0


def earlier_rows(out: Path, a, named: List[Tuple[str, Path]]) -> dict:
    """`--append`: the output JSON so far, checked to be of the same config and sets."""
    if not out.is_file():
        raise SystemExit(f"--append: {out} does not exist yet; run without --append first")
    d = json.loads(out.read_text())
    have = {st["name"]: st["path"] for st in d.get("sets", [])}
    wrong = [n for n, pth in named if have.get(n) != str(pth)]
    if d.get("config") != a.config or wrong:
        raise SystemExit(f"--append: {out} was made with config {d.get('config')} and sets {have}; "
                         f"this run has {a.config} and {dict((n, str(q)) for n, q in named)}")
    return d


@dataclasses.dataclass
class NamedSet:
    name: str
    path: Path
    syn: dict
    text: object           # utils.text_sets.TextSet
    text_path: Path


def set_paths(values: List[str]) -> List[Tuple[str, Path]]:
    """`--set_path [NAME=]PATH` values as (name, path); the first defaults to 'synthetic'."""
    out = []
    for i, v in enumerate(values):
        name, sep, path = v.partition("=")
        if not sep or Path(v).is_file():          # a plain path (which may itself hold a '=')
            name, path = ("synthetic" if i == 0 else f"set {i + 1}"), v
        if not Path(path).is_file():
            raise SystemExit(f"--set_path {v}: {path} is not a file (a syn_data_<iter>.pth)")
        out.append((name, Path(path)))
    if len({n for n, _ in out}) != len(out):
        raise SystemExit(f"--set_path: two sets share a name ({[n for n, _ in out]}); name them NAME=PATH")
    return out


def write(out: Path, a, argv, cfg, sets: List[NamedSet], timing: dict, rows: list, complete: bool,
          earlier: Optional[dict] = None) -> None:
    """The JSON so far (after every model, so an interrupted run keeps what it measured); with
    `earlier` (--append), its rows of the other models first, and each run's command kept."""
    described = [{"name": st.name, "path": str(st.path), "tokens": bool(st.syn["meta"].get("tokens")),
                  "text_set": str(st.text_path),
                  "text_meta": json.loads(st.text_path.with_suffix(".meta.json").read_text())}
                 for st in sets]
    command = "python benchmarks/bench_cross_arch.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    commands, models = [command], list(a.models)
    if earlier is not None:
        mine = set(a.models)
        names_now = {r.get("model") for r in rows}             # the classifiers' names, not aliases
        rows = [r for r in earlier.get("rows", []) if r.get("model") not in names_now] + rows
        timing = {**{k: v for k, v in earlier.get("seconds_per_model", {}).items()
                     if k not in mine}, **timing}
        names = {st["name"] for st in described}
        described = described + [st for st in earlier.get("sets", []) if st["name"] not in names]
        commands = list(earlier.get("commands") or [earlier.get("command")]) + commands
        models = [m for m in earlier.get("models", []) if m not in mine] + models
        complete = complete and bool(earlier.get("rows"))
    atomic_write_json(out, {"benchmark": "cross_arch", "config": a.config,
                            "set_path": described[0]["path"], "sets": described,
                            "dataset": dataset_tag(cfg), "ipc": cfg.condense.ipc,
                            "condensed_on": sets[0].syn["meta"].get("model"),
                            "models": models, "protocol": dataclasses.asdict(cfg.evaluate),
                            "text_set": described[0]["text_set"], "text_meta": described[0]["text_meta"],
                            "seconds_per_model": timing, "machine": machine_info(),
                            "command": " && ".join(commands), "commands": commands,
                            "complete": complete, "rows": rows})
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
