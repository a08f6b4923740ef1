"""Installable anywhere: the wheel holds every module, the shipped configs (package data) and the
console script; unpacked into a folder that is not the checkout and run from a third folder, the
CLI finds configs by name and writes results and caches under the current directory."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import textcondense
from tests.conftest import ROOT

PACKAGES = ("textcondense", "condense", "condenser", "distiller", "evaluation", "NCFM", "utils")


def tracked_files() -> list:
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in proc.stdout.split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (no isolation, no deps) from a copy of the checkout's tracked files."""
    src = tmp_path_factory.mktemp("src")
    for f in tracked_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", str(src), "-w", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (whl,) = out.glob("textcondense-*.whl")
    return whl


def test_wheel_holds_every_module_the_configs_and_the_script(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert wheel.name.startswith(f"textcondense-{textcondense.__version__}-")
    modules = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if p.relative_to(ROOT).as_posix() in set(tracked_files())}
    assert modules and modules <= names, sorted(modules - names)
    configs = {f"textcondense/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "config").rglob("*.yaml")}
    assert configs <= names, sorted(configs - names)
    (entry,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "textcondense = condense.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    assert any(n.endswith("LICENSE") for n in names)


def test_unpacked_wheel_runs_from_another_folder(wheel, tmp_path):
    site, work = tmp_path / "site", tmp_path / "work"
    zipfile.ZipFile(wheel).extractall(site)
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("TEXTCONDENSE_HOME", None)

    def run(*args, timeout=600):
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=timeout)

    where = run("-c", "import utils.config_files as f, utils.config as c; print(f.__file__); "
                      "print(f.in_checkout(), c.PROJECT_ROOT, f.shipped_config_dir())")
    assert where.returncode == 0, where.stderr[-3000:]
    lines = where.stdout.split("\n")
    assert lines[0].startswith(str(site))                       # the unpacked copy, not the checkout
    assert lines[1] == f"False {work} {site / 'textcondense' / 'config'}"
    top = run("-m", "condense", "--help")
    assert top.returncode == 0 and "evaluate" in top.stdout
    helped = run("-m", "condense", "condense", "--config_path", "demo", "--help")
    assert helped.returncode == 0 and "1 in this config" in " ".join(helped.stdout.split())
    # a real run of a shipped config by name: results and caches under the current folder
    small = ["--set", "pretrain.num_premodel=1", "--set", "pretrain.epochs=1", "--niter", "2",
             "--set", "dataset.max_train_per_class=8", "--set", "dataset.max_test_per_class=4"]
    done = run("-m", "condense", "condense", "--config_path", "config/smoke.yaml", *small)
    assert done.returncode == 0, done.stderr[-4000:]
    sets = list((work / "results" / "condense").rglob("syn_data_2.pth"))
    assert len(sets) == 1 and sets[0].with_suffix(".safetensors").is_file()
    assert (work / "results" / "smoke" / "pretrained_models").is_dir()
    assert (work / ".cache").is_dir()
    assert not (site / "results").exists() and not (site / ".cache").exists()
