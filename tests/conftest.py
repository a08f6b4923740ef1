"""Shared fixtures: paths, the packaged model, and smoke experts trained once per session."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SMOKE = str(ROOT / "config" / "smoke.yaml")


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is not present (../shared/data beside the checkout)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: str, args: list[str], nproc: int = 2, timeout: int = 600, cwd: Path = ROOT
             ) -> subprocess.CompletedProcess:
    """Run an entry script under real torchrun (gloo on CPU); fail with its output on error."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
           str(ROOT / script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun {script} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def smoke_experts(tmp_path_factory) -> str:
    """Smoke experts (tiny random BERT) trained once, by the real 2-process torchrun pretrain."""
    root = tmp_path_factory.mktemp("experts")
    torchrun("condense/pretrain_script_text.py",
             ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={root}"])
    return str(root)
