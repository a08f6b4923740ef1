"""Issue 28's first lever measured: does bfloat16 autocast make a classifier's training step faster here?

    python benchmarks/bench_precision.py [--model all-MiniLM-L6-v2] [--batch 16] [--length 64]
        [--steps 3] [--threads 1] [--optimizers fused loop] [--quick]

Experts, evaluation classifiers and distillation students all train the same way: an encoder and
a head, AdamW steps on token batches. This times that step (forward, backward, optimiser; median
of `--steps` after one warm-up step) in fp32 and under bf16 autocast, side by side in one process
on the same batch, with each AdamW implementation of `--optimizers` (the fused kernel the
classifiers use, `utils.training.adamw`, and torch's default CPU loop over tensors), and records
what `precision: auto` resolves to on this device
(`utils.precision`: bf16 only where the device runs it natively, a CUDA GPU with bf16 or a CPU
with avx512_bf16 / AMX). Where it is not native, torch emulates bf16 and autocast is slower.
`--quick`: the tiny random test BERT (the tested path). Writes
benchmarks/results/perf/precision_train[_quick].json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout

from benchmarks.common import PERF, machine_info  # noqa: E402


def step_seconds(model, optimizer, batch: dict, labels, bf16: bool, steps: int, device) -> list:
    """Wall seconds of `steps` training steps (after one warm-up step)."""
    import torch
    import torch.nn.functional as F

    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch).logits                                   # [B, C]
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--optimizers", nargs="+", default=["fused", "loop"], choices=["fused", "loop"],
                   help="AdamW implementations timed: 'fused' (utils.training.adamw, what the "
                        "classifiers use) and 'loop' (torch's default on CPU: a loop over tensors)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    a = p.parse_args(argv)
    import torch

    from utils.config_schema import NetworkConfig
    from utils.model import build_classifier
    from utils.precision import bf16_is_fast, resolve_precision
    from utils.training import adamw

    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = NetworkConfig(model_path="random" if a.quick else a.model)
    torch.manual_seed(0)
    rows, batch = [], None
    for optimizer in a.optimizers:
        for mode in ("fp32", "bf16"):
            torch.manual_seed(0)                      # the same start for every row
            model = build_classifier(net, 5).to(device).train()
            opt = (adamw(model.parameters(), lr=5e-5, weight_decay=0.01) if optimizer == "fused"
                   else torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01))
            if batch is None:                         # the same batch for every row
                vocab = model.word_embeddings().num_embeddings
                ids = torch.randint(1000 % vocab, vocab, (a.batch, a.length),
                                    generator=torch.Generator().manual_seed(0)).to(device)
                batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            labels = torch.arange(a.batch, device=device) % 5
            times = step_seconds(model, opt, batch, labels, mode == "bf16", a.steps, device)
            rows.append({"precision": mode, "optimizer": optimizer,
                         "fused": bool(opt.param_groups[0].get("fused")),
                         "step_seconds": [round(t, 5) for t in times],
                         "median_step_seconds": round(statistics.median(times), 5)})
            print(f"{mode} {optimizer}: median {rows[-1]['median_step_seconds']} s / step",
                  flush=True)
    med = {(r["precision"], r["optimizer"]): r["median_step_seconds"] for r in rows}
    first = a.optimizers[0]
    ratio = med[("bf16", first)] / max(med[("fp32", first)], 1e-9)
    extra = {}
    if len(a.optimizers) == 2:
        extra = {"fused_vs_loop_step_time": {m: round(med[(m, "fused")] / max(med[(m, "loop")],
                                                                              1e-9), 2)
                                             for m in ("fp32", "bf16")}}
    out = {"benchmark": "precision_train", "model": net.model_path, "batch": a.batch,
           "length": a.length, "steps": a.steps, "device": device.type,
           "bf16_native": bf16_is_fast(device), "auto_resolves_to": resolve_precision("auto", device),
           "optimizers": a.optimizers, "bf16_vs_fp32_step_time": round(ratio, 2), **extra,
           "rows": rows, **machine_info(a.threads)}
    path = Path(a.out) if a.out else PERF / f"precision_train{'_quick' if a.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"bf16 step time = {ratio:.2f} x fp32 ({first} AdamW); "
          f"{extra or ''} precision auto -> {out['auto_resolves_to']}; written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
