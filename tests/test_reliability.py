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

import pytest
import torch

from condense import condense_script_text, distill_script_text, evaluate_script_text, pretrain_script_text
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
            "--set", "condense.niter=40", "--set", "condense.save_every=10",
            "--set", "condense.log_every=20"]       # the kill lands after iteration 10, 30 to go
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
    assert complete_checkpoints(out), "no checkpoint within 120 s: the kill would test nothing"
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
    # resume=never with bad input is refused before anything is moved aside
    args_before = (tmp_path / "args.log").read_bytes()
    assert condense(tmp_path, smoke_experts, "--set", "run.resume=never",
                    "--set", f"dataset.path={tmp_path / 'nope.csv'}") == 2
    assert (tmp_path / "args.log").read_bytes() == args_before
    assert not list(tmp_path.glob("*.old-*")) and (tmp_path / "distilled_data").is_dir()
    assert condense(tmp_path, smoke_experts, "--set", "condense.ipc=3", "--set", "condense.niter=3",
                    "--set", "run.resume=never") == 0
    assert final_set(tmp_path)["inputs_embeds"].shape[0] == 15
    # every output of the earlier run is kept aside, none is left beside the new run's
    for name in ("checkpoints", "distilled_data", "args.log", "loss_history.json"):
        assert list(tmp_path.glob(f"{name}.old-*")), name
    assert [h["iteration"] for h in json.loads((tmp_path / "loss_history.json").read_text())
            ][-1] == 3
    assert list(tmp_path.glob("args.log.old-*"))[0].read_bytes() == args_before


def test_a_checkpoint_without_a_later_added_setting_resumes_at_its_old_value(tmp_path,
                                                                             smoke_experts):
    """A checkpoint written before condense.update_fraction (and the other ADDED_LATER keys)
    existed resumes while the run keeps the value that reproduces the older behaviour, and is
    refused, naming the key, when the run changes it."""
    from utils.checkpoint import load_checkpoint, save_checkpoint
    from utils.config_schema import ADDED_LATER
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=3") == 0
    it, path = complete_checkpoints(tmp_path)[-1]
    state = load_checkpoint(path)
    assert set(ADDED_LATER) & set(state["settings"]) == {"condense.update_fraction",
                                                          "pretrain.group_by_length",
                                                          "pretrain.precision",
                                                          "network.pooling"}
    for key in ADDED_LATER:
        state["settings"].pop(key, None)          # as an older version wrote it
    save_checkpoint(state, tmp_path, it)
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=4",
                    "--update_fraction", "0.5") == 2
    assert "condense.update_fraction: '(unset)' -> 0.5" in (tmp_path / "print.log").read_text()
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=4") == 0
    assert "resuming from" in (tmp_path / "print.log").read_text()
    # a scoring-only setting (multi-label decisions) may change on resume, old checkpoint or new
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=5",
                    "--set", "dataset.at_least_one_label=false") == 0
    assert (tmp_path / "distilled_data" / "syn_data_5.pth").is_file()   # rc 2 had it refused


def test_resume_may_switch_the_cache_and_tracking_but_not_a_matching_option(tmp_path, smoke_experts):
    """Options marked resumable (feature_match's real_cache) and run.report_to may change on
    resume; any other objective option shapes the state and is refused, naming it."""
    def terms(cache: bool, freqs: int = 512) -> str:
        return (f"condense.objectives=[{{name: feature_match, options: {{real_cache: {str(cache).lower()}, "
                f"num_freqs: {freqs}}}}}, {{name: calibration}}]")
    grid = ("--set", "condense.lam_grid=4")
    assert condense(tmp_path, smoke_experts, *grid, "--set", terms(True), "--set", "condense.niter=3") == 0
    assert condense(tmp_path, smoke_experts, *grid, "--set", terms(False), "--set", "condense.niter=6",
                    "--set", "run.report_to=[tensorboard]") == 0
    log = (tmp_path / "print.log").read_text()
    assert "resuming from" in log and (tmp_path / "distilled_data" / "syn_data_6.pth").is_file()
    assert condense(tmp_path, smoke_experts, *grid, "--set", terms(False, 256),
                    "--set", "condense.niter=9") == 2
    assert "num_freqs" in (tmp_path / "print.log").read_text().split("other settings")[-1]


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


@pytest.mark.parametrize("form", ["space", "equals"])
def test_pretrain_output_dir_conflicts_with_explicit_expert_dir(tmp_path, capfd, form):
    out = ["--output_dir", str(tmp_path / "a")] if form == "space" else [
        f"--output_dir={tmp_path / 'a'}"]
    code = pretrain_script_text.main(["--config_path", SMOKE, *out,
                                      "--set", f"pretrain.expert_dir={tmp_path / 'b'}"])
    assert code == 2
    err = capfd.readouterr().err
    assert "--output_dir and --set pretrain.expert_dir both say where the experts go" in err
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("*.pt"))


def test_a_refused_evaluation_leaves_the_folder_of_a_finished_one_alone(tmp_path, capfd):
    ev = tmp_path / "ev"
    (ev / "eval").mkdir(parents=True)
    (ev / "args.log").write_text("# the finished run's config\n")
    (ev / "eval" / "results.json").write_text("[]\n")
    before = {p: p.read_bytes() for p in ev.rglob("*") if p.is_file()}
    for bad, says in ((["--baseline", "bogus"], "unknown baseline 'bogus'"),
                      ([], "nothing to evaluate"),
                      (["--load_path", str(tmp_path / "none.pth")], "synthetic set not found"),
                      (["--baseline", "random", "--set", f"dataset.path={tmp_path / 'no.csv'}"],
                       "does not exist")):
        assert evaluate_script_text.main(["--config_path", SMOKE, "--output_dir", str(ev), *bad]
                                         ) == 2, bad
        assert says in capfd.readouterr().err, bad
        assert {p: p.read_bytes() for p in ev.rglob("*") if p.is_file() and p.name != "print.log"
                } == before, bad
    # an accepted evaluation into the folder keeps the earlier one aside, never overwrites it
    assert evaluate_script_text.main(["--config_path", SMOKE, "--output_dir", str(ev), "--baseline",
                                      "random", "--set", "evaluate.num_eval=1", "--set",
                                      "evaluate.steps=2", "--set",
                                      f"evaluate.results_table={tmp_path / 't.md'}"]) == 0
    (old_eval,), (old_args,) = ev.glob("eval.old-*"), ev.glob("args.log.old-*")
    assert (old_eval / "results.json").read_text() == "[]\n"
    assert old_args.read_text() == "# the finished run's config\n"
    assert [e["method"] for e in json.loads((ev / "eval" / "results.json").read_text())] == ["random"]


def test_distill_refuses_a_missing_set_before_training_the_teacher(tmp_path, capfd):
    experts = tmp_path / "experts"
    for extra, says in (([], "needs a synthetic set: --load_path"),
                        (["--load_path", str(tmp_path / "none.pth")], "synthetic set not found")):
        assert distill_script_text.main(["--config_path", SMOKE, "--output_dir", str(tmp_path / "d"),
                                         "--set", f"pretrain.expert_dir={experts}",
                                         "--set", "distill.data=synthetic", *extra]) == 2
        assert says in capfd.readouterr().err
        assert not list(experts.rglob("*.safetensors")) and not list(experts.rglob("*.pt"))


# ------------------------------------------------------------------- the catalogue of bad inputs

def _table(path: Path, labels, texts=None) -> str:
    """A small CSV of real-looking texts with the given label cells (written as is)."""
    texts = texts or [f"article {i} about topic {i % 3}" for i in range(len(labels))]
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels)))
    return str(path)


def _bad_inputs(tmp: Path, smoke_set: Path, done: Path) -> dict:
    """name -> (extra argv for condense, a fragment the one error line must contain[, env])."""
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
    relabelled = torch.load(smoke_set, weights_only=True)
    relabelled["labels"][0] = (relabelled["labels"][0] + 1) % 5        # disagrees with class_of
    torch.save(relabelled, tmp / "relabelled.pth")
    unmasked = torch.load(smoke_set, weights_only=True)
    unmasked["attention_mask"][3] = 0
    torch.save(unmasked, tmp / "unmasked.pth")
    (tmp / "notes.txt").write_text("just some notes, not a set\n")
    (tmp / "empty.yaml").write_text("# nothing set here\n")
    (tmp / "missing_base.yaml").write_text("base: no_such_base.yaml\ncondense:\n  ipc: 1\n")
    (tmp / "twice.yaml").write_text(f"base: {SMOKE}\ncondense:\n  ipc: 1\ncondense:\n  ipc: 3\n")
    os.mkfifo(tmp / "fifo.yaml")
    os.symlink(tmp / "loop_b.yaml", tmp / "loop_a.yaml")
    os.symlink(tmp / "loop_a.yaml", tmp / "loop_b.yaml")
    ids = [str(i % 5) for i in range(30)]
    (tmp / "mixed.jsonl").write_text("".join(
        json.dumps({"text": f"article {i}", "label": (i % 12) if i % 12 < 10 else str(i % 12)})
        + "\n" for i in range(48)))
    (tmp / "syntax.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b" "label": 1}\n')

    def data(path: str) -> list:
        return ["--set", f"dataset.path={path}"]
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
        "layer out of range": (["--set", "condense.objectives=[{name: feature_match, options: "
                                "{layers: [99]}}]"], "out of range"),
        "missing set": (["--init", "load", "--load_path", str(tmp / "nope.pth")], "not found"),
        "set missing a class": (["--init", "load", "--load_path", str(tmp / "partial.pth")],
                                "no sequences of the classes"),
        "non-finite set": (["--init", "load", "--load_path", str(tmp / "nan.pth")], "NaN/Inf"),
        "set labels disagree with class_of": (["--init", "load", "--load_path",
                                               str(tmp / "relabelled.pth")],
                                              "disagree with class_of"),
        "set with an all-zero mask": (["--init", "load", "--load_path", str(tmp / "unmasked.pth")],
                                      "all-zero attention_mask"),
        "load_path a text file": (["--init", "load", "--load_path", str(tmp / "notes.txt")],
                                  "not a torch file"),
        "output is a file": (["--output_dir", str(a_file)], "is a file"),
        "output under a file": (["--output_dir", str(a_file / "sub")], "cannot be written"),
        "niter below the newest checkpoint": (["--output_dir", str(done), "--set",
                                               "condense.niter=3"],
                                              "already holds a checkpoint of iteration 6"),
        "blank label cell": (data(_table(tmp / "blank.csv", ids[:7] + [""] + ids[8:])),
                             "row 8: the label is blank"),
        "negative id": (data(_table(tmp / "neg.csv", ids[:-1] + ["-1"])),
                        "row 30: the label -1 is a negative id"),
        "ids 1.0 to 4.0": (data(_table(tmp / "float.csv", [f"{1 + i % 4}.0" for i in range(30)])),
                           "subtract 1"),
        "fractional label": (data(_table(tmp / "frac.csv", ids[:4] + ["0.5"] + ids[5:])),
                             "row 5: the label '0.5' is a fraction"),
        "single class": (data(_table(tmp / "one.csv", ["sports"] * 30)), "at least 2"),
        "stray id 100000": (data(_table(tmp / "stray.csv", ids[:-1] + ["100000"])),
                            "the largest id, 100000, is at"),
        "ints mixed with strings": (data(str(tmp / "mixed.jsonl")), "mix numbers and strings"),
        "JSONL syntax error": (data(str(tmp / "syntax.jsonl")), "syntax.jsonl:2: not valid JSON"),
        "nclass disagrees": (["--set", "dataset.nclass=4"], "dataset.nclass is 4 but"),
        "empty config file": (["--config_path", str(tmp / "empty.yaml")], "holds no settings"),
        "base missing": (["--config_path", str(tmp / "missing_base.yaml")],
                         "fix the base: line of missing_base.yaml"),
        "duplicate YAML key": (["--config_path", str(tmp / "twice.yaml")], "given twice"),
        "config is a FIFO": (["--config_path", str(tmp / "fifo.yaml")], "is a FIFO"),
        "config symlink loop": (["--config_path", str(tmp / "loop_a.yaml")], "symlink loop"),
        "collective timeout 0": (["--set", "run.collective_timeout_s=0"],
                                 "run.collective_timeout_s is 0.0"),
        "TEXTCONDENSE_LOG_SECONDS=abc": ([], "TEXTCONDENSE_LOG_SECONDS is 'abc'",
                                         {"TEXTCONDENSE_LOG_SECONDS": "abc"}),
    }


def test_catalogue_of_bad_inputs(tmp_path, smoke_experts, capsys, monkeypatch):
    """Every bad input: exit 2, one error line naming the problem and the fix, no traceback, and
    the finished run beside it byte-identical (its lock released, its files untouched)."""
    done = tmp_path / "done"
    assert condense(done, smoke_experts) == 0                 # an earlier, finished run
    before = {p: p.read_bytes() for p in done.rglob("*") if p.is_file() and p.name != "print.log"}
    capsys.readouterr()
    failures = []
    fresh = tmp_path / "fresh_experts"       # the --init load refusals come before any training
    cases = _bad_inputs(tmp_path, done / "distilled_data" / "syn_data_6.pth", done)
    for name, (extra, fragment, *env) in cases.items():
        out = ["--output_dir", str(tmp_path / name.replace(" ", "_").replace("=", "_"))]
        experts = fresh if "--init" in extra and name != "set missing a class" else smoke_experts
        with monkeypatch.context() as m:
            for key, value in (env[0] if env else {}).items():
                m.setenv(key, value)
            try:
                code = condense_script_text.main(["--config_path", SMOKE, "--set",
                                                  f"pretrain.expert_dir={experts}", *out, *extra])
            except SystemExit as exc:          # refused before the run started (config, output)
                code = exc.code
        text = capsys.readouterr().err
        errors = [ln for ln in text.splitlines() if " E [rank" in ln]
        if code != 2 or "Traceback" in text or len(errors) != 1 or fragment not in errors[0]:
            failures.append(f"{name}: exit {code}, errors {errors}, traceback {'Traceback' in text}")
    assert not failures, "\n".join(failures)
    after = {p: p.read_bytes() for p in done.rglob("*") if p.is_file() and p.name != "print.log"}
    assert after == before
    assert not fresh.exists() or not any(fresh.rglob("*.safetensors"))


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
    # torchrun's own failure summary (ChildFailedError) names the cause, not a traceback pointer
    root = text.split("Root Cause")[-1]
    assert "traceback : synthetic set not found" in root and "exitcode  : 2" in root, root


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


# ----------------------------------------------------------- round two: silent-wrong cases fixed

HOLDER = """
import sys, time
from pathlib import Path
from utils import run_lock
run_lock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def test_second_run_into_a_locked_folder_is_refused_and_a_stale_lock_taken_over(
        tmp_path, smoke_experts, capsys):
    """Silent-wrong case 1: two runs into one --output_dir. A live holder (another process)
    makes the second run exit 2 naming it, touching nothing; once the holder is dead (kill -9)
    its lock is taken over with a warning and the run completes."""
    out = tmp_path / "out"
    assert condense(out, smoke_experts, "--set", "condense.niter=3") == 0
    assert not (out / ".textcondense.lock").exists()               # released at the end
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        capsys.readouterr()
        try:
            code = condense(out, smoke_experts, "--set", "condense.niter=6", "--ipc", "3")
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        line = next(ln for ln in err.splitlines() if " E [rank" in ln)
        assert f"in use by another run (pid {holder.pid} on host" in line and "--output_dir" in line
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait()
    assert condense(out, smoke_experts, "--set", "condense.niter=6") == 0
    log = (out / "print.log").read_text()
    assert f"taking over the lock of a run that is no longer running (pid {holder.pid}" in log
    assert (out / "distilled_data" / "syn_data_6.pth").is_file()
    assert not (out / ".textcondense.lock").exists()


def _news_csv(path: Path, swap: bool = False) -> Path:
    """Real BBC text, 3 classes x 12 articles; `swap` exchanges two classes' labels."""
    from utils.readers import read_bbc
    texts, labels, names = read_bbc()
    rows = []
    for c in range(3):
        name = names[(1 - c) if swap and c < 2 else c]
        rows += [(t[:150].replace(",", " ").replace('"', " "), name)
                 for t, y in zip(texts, labels) if y == c][:12]
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return path


def test_data_edited_in_place_trains_new_experts_and_refuses_the_old_checkpoint(tmp_path, capsys):
    """Silent-wrong case 2: the data file edited in place (labels swapped) reused the experts
    and checkpoints of the old data. Now the expert fingerprint holds the data's content hash
    (new experts), and the old checkpoint is refused as another run's."""
    from utils.config import load_config
    from utils.experts import expert_set_dir

    data, experts = _news_csv(tmp_path / "news.csv"), tmp_path / "experts"
    args = ["--set", f"dataset.path={data}", "--set", "dataset.name=news", "--set",
            "dataset.nclass=null", "--set", "condense.niter=3"]
    assert condense(tmp_path / "out", str(experts), *args) == 0
    cfg = load_config(SMOKE, [("dataset.path", str(data)), ("dataset.name", "news"),
                              ("dataset.nclass", None), ("pretrain.expert_dir", str(experts))])
    old_set = expert_set_dir(cfg)
    assert old_set.is_dir()
    _news_csv(data, swap=True)                                       # edited in place
    capsys.readouterr()
    code = condense(tmp_path / "out", str(experts), *args[:-2], "--set", "condense.niter=6")
    assert code == 2 and "the training data changed" in capsys.readouterr().err
    assert not (tmp_path / "out" / "distilled_data" / "syn_data_6.pth").exists()
    assert expert_set_dir(cfg) != old_set                           # the new data's experts
    assert condense(tmp_path / "fresh", str(experts), *args) == 0
    assert "missing or unfinished" in (tmp_path / "fresh" / "print.log").read_text()
    assert sorted(p.name for p in old_set.parent.iterdir()) == sorted(
        [old_set.name, expert_set_dir(cfg).name])


def test_damaged_expert_file_is_retrained_with_a_warning(tmp_path, smoke_experts, caplog):
    """Silent-wrong case 6 (experts): zeroed bytes inside a weights file were loaded silently.
    The checksum stored in the file fails, a warning names the file, and the expert is trained
    again: the same bytes as before the damage."""
    import shutil

    from utils.config import load_config
    from utils.experts import expert_set_dir, missing_experts, verify_experts, weights_path

    root = tmp_path / "experts"
    shutil.copytree(smoke_experts, root)
    cfg = load_config(SMOKE, [("pretrain.expert_dir", str(root))])
    final = weights_path(expert_set_dir(cfg), 0, cfg.pretrain.epochs)
    damaged = bytearray(final.read_bytes())
    half = len(damaged) // 2
    damaged[half: half + 2048] = bytes(b ^ 0xFF for b in damaged[half: half + 2048])
    final.write_bytes(bytes(damaged))
    assert verify_experts(cfg) == [0]
    assert str(final) in caplog.text and "checksum" in caplog.text
    assert missing_experts(cfg) == [0]
    assert pretrain_script_text.main(["--config_path", SMOKE, "--set",
                                      f"pretrain.expert_dir={root}"]) == 0
    assert final.read_bytes() != bytes(damaged) and missing_experts(cfg) == []
    assert verify_experts(cfg) == []                               # the new file's checksum holds


def test_damaged_tokenisation_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    """Silent-wrong case 6 (cache): zeroed bytes in a cache file gave wrong token ids."""
    from utils.config_schema import NetworkConfig
    from utils.data import tokenize_cached
    from utils.model import load_tokenizer

    tok = load_tokenizer(NetworkConfig())
    texts = ["the cup final tonight", "shares of a chip maker fall", "a new film opens"]
    ids, mask = tokenize_cached(texts, tok, 12, str(tmp_path))
    (path,) = tmp_path.glob("*.safetensors")
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])                # inside the tensor bytes
    path.write_bytes(bytes(data))
    ids2, mask2 = tokenize_cached(texts, tok, 12, str(tmp_path))
    assert torch.equal(ids2, ids) and torch.equal(mask2, mask)
    assert f"tokenisation cache {path} is damaged" in caplog.text
    ids3, _ = tokenize_cached(texts, tok, 12, str(tmp_path))        # rebuilt file: no warning
    assert torch.equal(ids3, ids) and caplog.text.count("is damaged") == 1


DISK_FULL = """
import resource, signal, sys, torch
from utils.io import atomic_torch_save
from utils.errors import UserError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    atomic_torch_save({"x": torch.zeros(10000)}, sys.argv[1])
except UserError as exc:
    print(exc)
    sys.exit(2)
"""


def test_disk_full_names_the_path_and_keeps_the_earlier_file(tmp_path):
    target = tmp_path / "state.pt"
    target.write_bytes(b"earlier")
    proc = subprocess.run([sys.executable, "-c", DISK_FULL, str(target)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"no space left on {tmp_path} writing state.pt" in proc.stdout
    assert target.read_bytes() == b"earlier" and [p.name for p in tmp_path.iterdir()] == [
        "state.pt"]


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, smoke_experts):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "condense" / "condense_script_text.py"), "--config_path",
           SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}", "--output_dir", str(out),
           "--set", "condense.niter=300", "--set", "condense.save_every=3"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # a shell's background job starts with SIGINT ignored: undo that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not complete_checkpoints(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    assert complete_checkpoints(out), "no checkpoint within 240 s: nothing kept to report"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in output, output[-3000:]
    line = next(ln for ln in output.splitlines() if " E [rank 0]" in ln)
    assert "interrupted (Ctrl-C): the newest checkpoint" in line and "run the same command" in line
    assert not (out / ".textcondense.lock").exists()


def test_missing_eval_model_path_names_its_key(tmp_path, smoke_experts, capsys):
    done = tmp_path / "done"
    assert condense(done, smoke_experts, "--set", "condense.niter=1") == 0
    capsys.readouterr()
    code = evaluate_script_text.main(["--config_path", SMOKE, "--output_dir", str(tmp_path / "ev"),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--load_path", str(done / "distilled_data" / "syn_data_1.pth"),
                                      "--eval_model_path", "/nonexistent/model"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if " E [rank" in ln]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err[-2000:]
    assert "evaluate.eval_model_path" in errors[0] and "network.model_path" not in errors[0]
