"""The `textcondense` command: subcommands, per-stage flags with true defaults, torchrun -m
condense, replaying a run from its args.log, and the per-ipc settings layer in the log."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from condense import cli, condense_script_text, pretrain_script_text
from tests.conftest import ROOT, SMOKE, free_port
from utils.cli_args import make_parser


def _help(stage, defaults=None) -> str:
    return make_parser("x", stage, defaults).format_help()


def _flags(stage) -> set:
    return {o for a in make_parser("x", stage)._actions for o in a.option_strings}


def test_top_level_help_lists_the_stages(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for stage in ("experts", "condense", "evaluate", "distill"):
        assert f"  {stage} " in out
    assert "Stage 2 - condense" in out                        # the script's own summary line
    assert cli.main([]) == 2                                  # no stage: usage, exit 2
    assert "usage: textcondense" in capsys.readouterr().err   # an error: on stderr
    assert cli.main(["condence"]) == 2
    assert "unknown stage 'condence'" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("textcondense ")


def test_each_stage_offers_only_its_flags():
    experts, condense, evaluate, distill = (_flags(s) for s in ("pretrain", "condense", "evaluate",
                                                                "distill"))
    assert "--ipc" not in experts and "--sampling_net" not in experts and "--niter" not in experts
    assert {"--num_premodel", "--epochs", "--seed", "--report_to"} <= experts
    assert {"--ipc", "--niter", "--init", "--load_path", "--report_to"} <= condense
    assert {"--ipc", "--load_path", "--num_eval"} <= evaluate and "--init" not in evaluate
    assert {"--data", "--student_layers", "--teacher_path", "--steps", "--load_path"} <= distill
    assert "--ipc" not in distill and "--init" not in distill
    assert "--steps" not in condense and "--student_layers" not in condense
    assert "--debug" in condense and not {"--debug"} & (experts | evaluate | distill)  # condense's


def test_help_shows_the_true_defaults():
    text = " ".join(_help("condense").split())
    assert "[condense.ipc; default: 10]" in text and "[condense.niter; default: 500]" in text
    assert "(default: None)" not in text
    from utils.config import load_config
    demo = " ".join(_help("condense", load_config("demo")).split())
    assert "[condense.ipc; default: 1 in this config; schema 10]" in demo


def test_stage_help_through_the_cli(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["experts", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: textcondense experts") and "--ipc" not in out


def _torchrun_module(args, cwd, nproc=2, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "-m", "condense",
           *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


def _set(folder, it=6):
    return torch.load(folder / "distilled_data" / f"syn_data_{it}.pth", weights_only=True)


def test_torchrun_module_and_replay_from_args_log(tmp_path, smoke_experts):
    common = ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}"]
    one, replay, two = tmp_path / "one", tmp_path / "replay", tmp_path / "two"
    # the CLI subcommand is the script's main: one process, in this process
    assert cli.main(["condense", *common, "--output_dir", str(one)]) == 0
    # args.log is a config: loading it replays the run, bit for bit (same world size)
    log = one / "args.log"
    assert "--config_path args.log" in log.read_text().splitlines()[1]
    assert condense_script_text.main(["--config_path", str(log), "--output_dir", str(replay)]) == 0
    a, b = _set(one), _set(replay)
    for key in ("inputs_embeds", "attention_mask", "labels", "class_of"):
        assert torch.equal(a[key], b[key]), key
    assert "replaying the run recorded in" in (replay / "print.log").read_text()
    # torchrun -m condense condense: 2 ranks, from another folder, the same set as 1 process
    _torchrun_module(["condense", *common, "--output_dir", str(two)], cwd=tmp_path)
    assert "world size 2 (gloo)" in (two / "print.log").read_text()
    assert torch.allclose(_set(two)["inputs_embeds"], a["inputs_embeds"], atol=1e-4)


def test_ipc_flag_applies_the_shipped_ipc_layer_and_says_so(tmp_path, smoke_experts):
    # experts are complete, so the stage only loads its config and logs it
    assert pretrain_script_text.main(["--config_path", SMOKE, "--set", "condense.ipc=10",
                                      "--output_dir", smoke_experts]) == 0
    from utils.config import load_config
    from utils.experts import expert_set_dir
    root = expert_set_dir(load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)]))
    log = (root / "print.log").read_text()
    assert "applied the per-ipc layer config/ipc10/_shared.yaml for --ipc 10" in log


def test_python_m_condense_help_runs_without_torch_import(tmp_path):
    code = ("import runpy, sys\n"
            "sys.argv = ['condense', '--help']\n"
            "try:\n    runpy.run_module('condense', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "textcondense {experts,condense,evaluate,distill}" in proc.stdout
    assert "torch imported: False" in proc.stdout


def test_help_with_an_unreadable_config_still_shows_the_flags(tmp_path, capsys):
    """--help never fails on the config it was given: an empty file shows the schema defaults."""
    from utils.cli_args import parse_args

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--config_path", str(empty), "--help"], "condense", stage="condense")
    assert exit_.value.code == 0 and "--niter" in capsys.readouterr().out


@pytest.mark.parametrize("bad, says", [(["--ipc", "abc"], "argument --ipc: invalid int value: 'abc'"),
                                       (["--foo"], "unrecognized arguments: --foo")])
def test_a_bad_flag_is_one_line_and_exit_2(capsys, bad, says):
    from utils.cli_args import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(bad, "condense", stage="condense")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and says in err and "--help" in err
