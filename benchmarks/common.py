"""What every benchmark records beside its figures: the machine, threads, torch, git commit and
date; and where results go."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# benchmarks/results/ by kind: one folder per family of benchmark (benchmarks/README.md)
EVAL = RESULTS / "eval"          # bench_eval.py: what a condensed set is worth
DISTILL = RESULTS / "distill"    # bench_distill.py
PERF = RESULTS / "perf"          # bench_ncfm, bench_condense, bench_unroll_memory, bench_latency, ...
EXPERTS = RESULTS / "experts"    # report_experts.py
QUALITY = RESULTS / "quality"    # report_quality.py
SMOKE = str(ROOT / "config" / "smoke.yaml")


def machine_info(threads: int | None = None) -> dict:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    flags = ""
    if Path("/proc/cpuinfo").is_file():
        text = Path("/proc/cpuinfo").read_text()
        flags = " ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text)
    return {"machine": platform.processor() or platform.machine(), "platform": platform.platform(),
            "cpu_flags": flags, "cpus": os.cpu_count(),
            "threads": threads if threads is not None else torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "git_commit": commit or None, "date": time.strftime("%Y-%m-%d %H:%M")}


def script_command(script: str, nproc: int, args: list) -> list:
    """The command that runs entry script `condense/<script>` with `nproc` ranks: plain python for
    one (its torch threads as configured), torchrun --standalone for more."""
    import sys

    path = str(ROOT / "condense" / script)
    if nproc == 1:
        return [sys.executable, path, *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--standalone", path, *args]


def offline_env() -> dict:
    """The environment benchmarks run entry scripts in: no hub downloads."""
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def run_script(script: str, nproc: int, args: list) -> None:
    """Run entry script `condense/<script>` with `nproc` ranks, echoing the command; raises
    CalledProcessError when it fails."""
    import subprocess

    cmd = script_command(script, nproc, args)
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, env=offline_env())


def load_run(config: str, overrides: list, num_eval: int | None = None):
    """(cfg, env, data) for a benchmark that runs the evaluation protocol in-process: the config
    with `--set section.key=value` overrides (and `evaluate.num_eval`), the process group, logging
    as the entry scripts set it up, the data."""
    from utils.config import load_config, parse_set
    from utils.distributed import init_distributed
    from utils.logging_utils import setup_logging
    from utils.runtime import load_data

    pairs = [parse_set(s) for s in overrides] + ([("evaluate.num_eval", num_eval)] if num_eval else [])
    cfg = load_config(config, pairs)
    env = init_distributed(cfg.run.gpu, cfg.run.tf32, cfg.run.collective_timeout_s)
    setup_logging(env.rank, cfg.run.log_level)   # the project's log lines; no loading reports
    return cfg, env, load_data(cfg)
