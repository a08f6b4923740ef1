"""Stage 4 measured: a 3-layer student of the all-MiniLM-L6-v2 expert, per dataset, on real data,
on the ipc-10 synthetic set and on both, with three loss mixes, beside the teacher and the same
student trained without a teacher (same steps, seeds and data).

    python benchmarks/bench_distill.py --dataset bbc [--steps 200] [--nproc 2] [--niter 100]
        [--data real synthetic both] [--mixes kd fsd tinybert] [--config FILE --name NAME]

`--config` (default config/distill/<dataset>.yaml) picks another teacher / student, e.g.
config/distill/bbc_mpnet.yaml (an MPNet teacher, a pretrained MiniLM student with its own
tokenizer; real data only), recorded as `--name` (default: the config's file name).

Steps: experts (skipped when complete); the ipc-10 NCFM set (skipped when present); then one
distillation run per (data, mix), each the real entry script under torchrun. The no-teacher
student does not depend on the mix, so it is trained once per data option (with the first mix).
Results: benchmarks/results/distill/<name>.json and the rows of
benchmarks/results/distill/table.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from benchmarks.common import ROOT, run_script  # noqa: E402


def torchrun(nproc: int, script: str, args: list) -> None:
    run_script(script, nproc, args)

RESULTS = ROOT / "benchmarks" / "results" / "distill"
MIXES = {
    # Hinton: soft logits (alpha 0.5) and labels
    # (spelt as config/distill/base.yaml spells it, so a run of the shipped default resumes here)
    "kd": "[{name: logit_kd, weight: 0.5, options: {temperature: 2.0}}, {name: label_ce, weight: 0.5}]",
    # FSD: KD plus the three CKA feature-structure losses on the mapped layers
    "fsd": "[{name: logit_kd, weight: 0.5}, {name: label_ce, weight: 0.5}, "
           "{name: cka_intra, weight: 1.0}, {name: cka_local, weight: 1.0}, "
           "{name: cka_global, weight: 1.0}]",
    # TinyBERT-style: KD plus hidden-state MSE and attention KL on the mapped layers
    "tinybert": "[{name: logit_kd, weight: 0.5}, {name: label_ce, weight: 0.5}, "
                "{name: hidden_mse, weight: 1.0}, {name: attn_kl, weight: 1.0}]",
}


def result_teacher(config: str) -> str:
    """The teacher as the config names it: its folder, or expert k of its encoder."""
    from utils.config import load_config
    cfg = load_config(config)
    d = cfg.distill
    if d.teacher_path:
        return Path(d.teacher_path).name
    return f"expert {d.teacher_expert} ({Path(cfg.network.model_path).name})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="bbc")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--niter", type=int, default=100, help="NCFM iterations of the ipc-10 set")
    p.add_argument("--data", nargs="+", default=["real", "synthetic", "both"])
    p.add_argument("--mixes", nargs="+", default=list(MIXES), choices=list(MIXES))
    p.add_argument("--config", help="Distillation config (default config/distill/<dataset>.yaml).")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="section.key=value for the experts and every distillation (recorded).")
    p.add_argument("--name", help="Name of the results file and run folders (default: the "
                   "config's file name with --config, else the dataset).")
    a = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    config = str(Path(a.config).resolve()) if a.config else \
        str(ROOT / "config" / "distill" / f"{a.dataset}.yaml")
    name = a.name or (Path(a.config).stem if a.config else a.dataset)
    extra = [x for o in a.overrides for x in ("--set", o)]
    torchrun(a.nproc, "pretrain_script_text.py", ["--config_path", config, *extra])
    syn = None
    if any(d != "real" for d in a.data):
        cdir = ROOT / "results" / "bench" / "condense" / f"{a.dataset}_ncfm_ipc10_distill"
        syn = cdir / "distilled_data" / f"syn_data_{a.niter}.pth"
        if not syn.is_file():
            torchrun(a.nproc, "condense_script_text.py",
                     ["--config_path", str(ROOT / "config" / "ipc10" / f"{a.dataset}.yaml"),
                      "--output_dir", str(cdir), "--set", f"condense.niter={a.niter}"])
    out_json = RESULTS / f"{name}.json"
    runs = json.loads(out_json.read_text())["runs"] if out_json.is_file() else []
    for data in a.data:
        for n, mix in enumerate(a.mixes):
            odir = ROOT / "results" / "bench" / "distill" / f"{name}_{data}_{mix}"
            args = ["--config_path", config, "--output_dir", str(odir),
                    "--set", f"distill.data={data}", "--set", f"distill.steps={a.steps}",
                    "--set", f"distill.losses={MIXES[mix]}",
                    "--set", f"distill.baseline={'true' if n == 0 else 'false'}",
                    "--set", f"distill.results_table={RESULTS / 'table.md'}", *extra]
            if syn is not None and data != "real":        # real data refuses a set it ignores
                args += ["--load_path", str(syn)]
            start = time.time()
            torchrun(a.nproc, "distill_script_text.py", args)
            result = json.loads((odir / "distill" / "results.json").read_text())
            runs = [r for r in runs if (r["data"], r["mix"]) != (data, mix)]
            runs.append({"data": data, "mix": mix, "losses": MIXES[mix], "steps": a.steps,
                         "wall_seconds": round(time.time() - start, 1), "rows": result["rows"]})
            out_json.write_text(json.dumps({"benchmark": "distill", "dataset": a.dataset,
                                            "config": os.path.relpath(config, ROOT),
                                            "overrides": a.overrides,
                                            "teacher": result_teacher(config),
                                            "student": result.get("student"),
                                            "nproc": a.nproc, "date": time.strftime("%Y-%m-%d"),
                                            "synthetic_set": str(syn) if syn else None,
                                            "runs": runs}, indent=2) + "\n")
            print(f"written {out_json} ({data}, {mix})", flush=True)


if __name__ == "__main__":
    main()
