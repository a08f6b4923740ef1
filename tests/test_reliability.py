"""Reliability: restarts after a killed worker, resume guards, corrupt checkpoints, non-finite
values, and the catalogue of bad inputs (exit code 2, one clear message, nothing lost)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from condense import condense_script_text, evaluate_script_text, pretrain_script_text
from tests.conftest import ROOT, SMOKE, free_port, torchrun
from utils.checkpoint import complete_checkpoints


def condense(out: Path, experts: str, *extra: str) -> int:
    return condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={experts}", *extra])


def final_set(out: Path) -> dict:
    it = max(int(p.stem.split("_")[-1]) for p in (out / "distilled_data").glob("syn_data_*.pth"))
    return torch.load(out / "distilled_data" / f"syn_data_{it}.pth", weights_only=True)


def _workers(agent_pid: int) -> list:
    """PIDs of the torchrun agent's worker processes (its direct children running python)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().split()
                if int(stat[3]) == agent_pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def test_killed_worker_restarts_with_default_launcher_flags(tmp_path, smoke_experts):
    """torchrun --max-restarts=1 with the default (static) rendezvous: SIGKILL one worker after the
    first checkpoint; the restarted group resumes and ends with the set of an uninterrupted run."""
    args = ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}",
            "--set", "condense.niter=240", "--set", "condense.save_every=3",
            "--set", "condense.log_every=60"]
    torchrun("condense/condense_script_text.py", [*args, "--output_dir", str(tmp_path / "ref")])
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--max-restarts=1",
           f"--master-port={free_port()}", str(ROOT / "condense" / "condense_script_text.py"),
           *args, "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agent = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.time() + 120
    while not complete_checkpoints(out) and time.time() < deadline and agent.poll() is None:
        time.sleep(0.05)
    workers = _workers(agent.pid)
    assert workers and agent.poll() is None, "the run ended before a worker could be killed"
    os.kill(workers[-1], signal.SIGKILL)
    output, _ = agent.communicate(timeout=300)
    assert agent.returncode == 0, output[-4000:]
    assert "resuming from" in (out / "print.log").read_text()
    assert torch.equal(final_set(out)["inputs_embeds"], final_set(tmp_path / "ref")["inputs_embeds"])


def test_resume_refuses_other_settings_and_leaves_args_log(tmp_path, smoke_experts):
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=3") == 0
    args_before = (tmp_path / "args.log").read_bytes()
    code = condense(tmp_path, smoke_experts, "--set", "condense.ipc=3", "--set", "condense.niter=9")
    assert code == 2
    log = (tmp_path / "print.log").read_text()
    assert "condense.ipc: 2 -> 3" in log and "run.resume=never" in log and "--output_dir" in log
    assert (tmp_path / "args.log").read_bytes() == args_before
    assert not (tmp_path / "distilled_data" / "syn_data_9.pth").exists()
    # allowed changes (more iterations) resume; resume=never starts afresh, old checkpoints kept
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=6") == 0
    assert condense(tmp_path, smoke_experts, "--set", "condense.ipc=3", "--set", "condense.niter=3",
                    "--set", "run.resume=never") == 0
    assert final_set(tmp_path)["inputs_embeds"].shape[0] == 15
    assert list(tmp_path.glob("checkpoints.old-*")) and list(tmp_path.glob("distilled_data.old-*"))


def test_corrupt_newest_checkpoint_falls_back(tmp_path, smoke_experts):
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=6") == 0
    newest = complete_checkpoints(tmp_path)[-1][1]
    data = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(data[: len(data) // 2])          # torn under its marker
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=9") == 0
    log = (tmp_path / "print.log").read_text()
    assert f"skipping checkpoint {newest}" in log and "checksum" in log
    assert "resuming from" in log and "iter_000003" in log.split("resuming from")[-1].splitlines()[0]


def test_nonfinite_stops_or_skips_and_never_saves(tmp_path, smoke_experts):
    stop = tmp_path / "stop"
    assert condense(stop, smoke_experts, "--set", "optimization.lr_img=1e30") == 2
    assert "non-finite" in (stop / "print.log").read_text()
    assert not list(stop.glob("distilled_data/*.pth"))             # nothing was saved
    skip = tmp_path / "skip"
    assert condense(skip, smoke_experts, "--set", "optimization.lr_img=1e30",
                    "--set", "condense.on_nonfinite=skip") == 0
    syn = final_set(skip)
    assert torch.isfinite(syn["inputs_embeds"]).all()
    history = json.loads((skip / "loss_history.json").read_text())
    assert any(h.get("skipped") for h in history)
    # a set holding NaN is refused by evaluation and as a starting point
    bad = dict(syn)
    bad["inputs_embeds"] = syn["inputs_embeds"].clone()
    bad["inputs_embeds"][0, 0, 0] = float("nan")
    torch.save(bad, tmp_path / "nan.pth")
    ev = tmp_path / "eval"
    assert evaluate_script_text.main(["--config_path", SMOKE, "--output_dir", str(ev), "--load_path",
                                      str(tmp_path / "nan.pth"), "--set",
                                      f"pretrain.expert_dir={smoke_experts}"]) == 2
    assert "NaN/Inf" in (ev / "print.log").read_text()
    assert not (ev / "eval" / "results.json").exists()


def test_pretrain_output_dir_conflicts_with_explicit_expert_dir(tmp_path):
    code = pretrain_script_text.main(["--config_path", SMOKE, "--output_dir", str(tmp_path / "a"),
                                      "--set", f"pretrain.expert_dir={tmp_path / 'b'}"])
    assert code == 2


# ------------------------------------------------------------------- the catalogue of bad inputs

def _bad_inputs(tmp: Path, smoke_set: Path) -> dict:
    """name -> (extra argv for condense, a fragment the one error line must contain)."""
    empty = tmp / "empty.csv"
    empty.write_text("")
    latin = tmp / "latin"
    latin.mkdir()
    (latin / "train.txt").write_bytes("DESC:def caf\xe9 ?\nNUM:date when ?\n".encode("latin-1"))
    (latin / "test.txt").write_text("DESC:def what ?\nNUM:date when ?\n")
    a_file = tmp / "a_file"
    a_file.write_text("x")
    partial = torch.load(smoke_set, weights_only=True)
    keep = partial["class_of"] != 4
    for k in ("inputs_embeds", "attention_mask", "labels", "class_of"):
        partial[k] = partial[k][keep]
    torch.save(partial, tmp / "partial.pth")
    nan = torch.load(smoke_set, weights_only=True)
    nan["inputs_embeds"][0, 0, 0] = float("inf")
    torch.save(nan, tmp / "nan.pth")
    return {
        "unknown key": (["--set", "condense.nope=1"], "unknown key 'condense.nope'"),
        "wrong type": (["--set", "condense.ipc=two"], "expected int"),
        "missing data folder": (["--set", "dataset.data_dir=/nonexistent/data"], "does not exist"),
        "empty data file": (["--set", "dataset.format=table", "--set", f"dataset.data_dir={empty}"],
                            "is empty"),
        "non-UTF-8 data": (["--set", "dataset.format=trec", "--set", f"dataset.data_dir={latin}",
                            "--set", "dataset.nclass=2"], "not valid UTF-8"),
        "missing model folder": (["--set", "network.model_path=/nonexistent/model"],
                                 "does not exist"),
        "layer out of range": (["--set", "network.layer_index=[99]"], "out of range"),
        "missing set": (["--init", "load", "--load_path", str(tmp / "nope.pth")], "not found"),
        "set missing a class": (["--init", "load", "--load_path", str(tmp / "partial.pth")],
                                "no sequences of the classes"),
        "non-finite set": (["--init", "load", "--load_path", str(tmp / "nan.pth")], "NaN/Inf"),
        "output is a file": (["--output_dir", str(a_file)], "is a file"),
        "output under a file": (["--output_dir", str(a_file / "sub")], "cannot be written"),
    }


def test_catalogue_of_bad_inputs(tmp_path, smoke_experts, capsys):
    done = tmp_path / "done"
    assert condense(done, smoke_experts) == 0                 # an earlier, finished run
    before = {p: p.read_bytes() for p in done.rglob("*") if p.is_file() and p.name != "print.log"}
    capsys.readouterr()
    failures = []
    for name, (extra, fragment) in _bad_inputs(tmp_path, done / "distilled_data" / "syn_data_6.pth").items():
        out = ["--output_dir", str(tmp_path / name.replace(" ", "_"))]
        try:
            code = condense_script_text.main(["--config_path", SMOKE, "--set",
                                              f"pretrain.expert_dir={smoke_experts}", *out, *extra])
        except SystemExit as exc:          # refused before the run started (config, output)
            code = exc.code
        text = capsys.readouterr().err
        errors = [ln for ln in text.splitlines() if " E [rank" in ln]
        if code != 2 or "Traceback" in text or len(errors) != 1 or fragment not in errors[0]:
            failures.append(f"{name}: exit {code}, errors {errors}, traceback {'Traceback' in text}")
    assert not failures, "\n".join(failures)
    after = {p: p.read_bytes() for p in done.rglob("*") if p.is_file() and p.name != "print.log"}
    assert after == before


def test_rank0_refusal_reaches_every_rank(tmp_path, smoke_experts):
    """A --load_path refused on rank 0 ends both ranks with the same message, not a lost peer."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master-port={free_port()}", str(ROOT / "condense" / "condense_script_text.py"),
           "--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}",
           "--init", "load", "--load_path", str(tmp_path / "missing.pth"),
           "--output_dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for rank in (0, 1):
        assert any(f"E [rank {rank}]" in ln and "synthetic set not found" in ln
                   for ln in text.splitlines()), text[-3000:]
    assert "Connection closed" not in text and "Traceback (most recent call last)" not in \
        "\n".join(ln for ln in text.splitlines() if "[rank" in ln)


def test_small_class_warns_about_duplicate_starts(tmp_path, smoke_experts):
    assert condense(tmp_path, smoke_experts, "--ipc", "30", "--set", "condense.niter=1") == 0
    log = (tmp_path / "print.log").read_text()
    assert "training samples for 30 synthetic sequences" in log and "copies" in log


def test_progress_lines_without_a_terminal(tmp_path, smoke_experts, monkeypatch):
    monkeypatch.setenv("TEXTCONDENSE_LOG_SECONDS", "0")
    monkeypatch.delenv("TEXTCONDENSE_PROGRESS", raising=False)
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=3") == 0
    lines = [ln for ln in (tmp_path / "print.log").read_text().splitlines() if "progress:" in ln]
    assert any("condense: 3/3" in ln and "ETA" in ln for ln in lines), lines
