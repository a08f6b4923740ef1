"""Config loading: schema errors name key and file, precedence CLI > YAML > defaults, --set."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from utils.config import PROJECT_ROOT, ConfigError, config_from_args, load_config, make_parser, save_config
from utils.config_schema import Config
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def parse(argv):
    return config_from_args(make_parser("test").parse_args(argv))


def test_every_shipped_config_is_valid():
    import condenser.objectives  # noqa: F401  publishes the registries the options are checked in
    import distiller.losses  # noqa: F401  (each KD loss's options are validated, kept a dict)
    files = sorted((ROOT / "config").rglob("*.yaml"))
    assert len(files) >= 15 + 1
    for f in files:
        cfg = load_config(str(f))
        for spec in cfg.condense.objectives:              # each term's options checked on load
            assert not isinstance(spec.options, dict), f"{f}: {spec.name} options not checked"
    ipc10 = load_config(str(ROOT / "config/ipc10/bbc.yaml"))
    assert ipc10.condense.ipc == 10 and ipc10.dataset.name == "bbc" and ipc10.dataset.nclass == 5
    assert [(s.name, getattr(s.options, "real_cache", None), getattr(s.options, "every", None))
            for s in ipc10.condense.objectives] == [("feature_match", True, None),
                                                     ("calibration", None, 4)]
    assert load_config(str(ROOT / "config/ipc50/trec.yaml")).dataset.nclass == 6


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path / "bad.yaml", "condense:\n  ipcc: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "bad.yaml" in msg and "condense.ipcc" in msg and "ipc" in msg


def test_unknown_section(tmp_path):
    path = write(tmp_path / "bad.yaml", "condence:\n  ipc: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown section 'condence'"):
        load_config(path)


def test_wrong_type_names_key_file_and_type(tmp_path):
    path = write(tmp_path / "bad.yaml", "condense:\n  ipc: ten\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: condense.ipc: expected int, got 'ten'"):
        load_config(path)
    path = write(tmp_path / "bad2.yaml", "condense:\n  init: zeros\n")
    import condenser.init  # noqa: F401  (publishes the init registry, as the scripts do)
    with pytest.raises(UserError, match=r"bad2.yaml: condense.init: unknown init 'zeros'; "
                                        r"registered: .*herding"):
        load_config(path)


def test_impossible_value(tmp_path):
    path = write(tmp_path / "bad.yaml", "condense:\n  ipc: 0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: condense.ipc = 0: must be >= 1"):
        load_config(path)
    # a number where text is expected says how to keep it text
    with pytest.raises(ConfigError, match=r"run.run_name: expected str, got 2024; quote it .*"
                                          r"--set \"run.run_name='2024'\""):
        parse(["--set", "run.run_name=2024"])
    # a key the user never gave is named without blaming "defaults"
    with pytest.raises(ConfigError, match=r"^condense.load_path = None: init 'load' needs") as err:
        parse(["--init", "load"])
    assert "defaults" not in str(err.value)
    path = write(tmp_path / "late.yaml", "condense:\n  niter: 10\n  eval_it: [0, 5, 20]\n")
    with pytest.raises(ConfigError, match=r"condense.eval_it.*\[20\] outside \[0, niter=10\]"):
        load_config(path)


def test_base_chain_provenance(tmp_path):
    write(tmp_path / "base.yaml", "dataset:\n  nclass: 1\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ncondense:\n  ipc: 3\n")
    with pytest.raises(ConfigError, match=r"base.yaml: dataset.nclass = 1"):
        load_config(child)  # the error names the file that set the bad value, not the child


def test_precedence_cli_over_yaml_over_defaults(tmp_path):
    path = write(tmp_path / "c.yaml", "condense:\n  ipc: 7\n  niter: 11\n")
    cfg = parse(["--config_path", path])
    assert (cfg.condense.ipc, cfg.condense.niter) == (7, 11)
    assert cfg.condense.save_every == Config().condense.save_every        # default kept
    cfg = parse(["--config_path", path, "--ipc", "3", "--set", "condense.niter=5",
                 "--set", "network.dropout=0.2", "--learn_labels", "--no-tf32"])
    assert (cfg.condense.ipc, cfg.condense.niter) == (3, 5)
    assert cfg.network.dropout == 0.2
    assert cfg.condense.learn_labels is True and cfg.run.tf32 is False
    # an explicit flag beats --set for the same key
    cfg = parse(["--config_path", path, "--set", "condense.ipc=4", "--ipc", "2"])
    assert cfg.condense.ipc == 2


def test_set_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse(["--set", "niter5"])
    with pytest.raises(ConfigError, match=r"command line: unknown key 'condense.nitre'"):
        parse(["--set", "condense.nitre=5"])
    with pytest.raises(ConfigError, match=r"command line: condense.niter: expected int"):
        parse(["--set", "condense.niter=many"])


def test_paths_from_yaml_resolve_against_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(ROOT / "config/ipc1/bbc.yaml"))
    assert cfg.pretrain.expert_dir == str(PROJECT_ROOT / "pretrained_models")
    # the same command from inside condense/ with ../config paths gives the same config
    monkeypatch.chdir(ROOT / "condense")
    assert load_config("../config/ipc1/bbc.yaml") == cfg
    # a relative path on the command line is relative to the current directory
    cfg = parse(["--config_path", "../config/ipc1/bbc.yaml", "--output_dir", "out"])
    assert cfg.run.output_dir == str(ROOT / "condense" / "out")
    # model keys keep an alias or hub name (no such folder) as written, from YAML and CLI alike
    cfg = load_config(str(ROOT / "config/distill/bbc_mpnet.yaml"),
                      [("distill.teacher_path", "org/some-classifier")])
    assert (cfg.network.model_path, cfg.distill.student_path, cfg.distill.teacher_path) == \
        ("mpnet", "all-MiniLM-L6-v2", "org/some-classifier")


def test_save_config_roundtrip(tmp_path):
    cfg = parse(["--config_path", str(ROOT / "config/smoke.yaml"), "--ipc", "3"])
    save_config(cfg, tmp_path / "args.log", {"stage": "test"})
    saved = yaml.safe_load((tmp_path / "args.log").read_text())
    assert saved["config"]["condense"]["ipc"] == 3 and saved["stage"] == "test"
    assert saved["config"]["network"]["model_path"] == "random"


def test_config_reference_is_up_to_date():
    """docs/config.md is generated from the schema and the registries (`make docs`); a new key or
    component option must be documented."""
    # a fresh interpreter: components other tests register from their files must not count
    out = subprocess.run([sys.executable, "-m", "condense.config_doc"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert (PROJECT_ROOT / "docs" / "config.md").read_text() == out


# ---------------------------------------------------------------- names, replays, per-ipc layers

def test_shipped_configs_by_name_and_unknown_names(tmp_path, monkeypatch):
    from utils.config_files import find_config
    monkeypatch.chdir(tmp_path)                              # names work from any folder
    for name in ("demo", "ipc10/bbc", "config/ipc10/bbc.yaml", "ipc10/bbc.yaml"):
        assert find_config(name) == ROOT / "config" / ("demo.yaml" if name == "demo" else "ipc10/bbc.yaml")
    assert load_config("ipc10/bbc") == load_config(str(ROOT / "config/ipc10/bbc.yaml"))
    with pytest.raises(ConfigError, match=r"config file not found: nope .*demo.*ipc10/bbc"):
        load_config("nope")


def test_args_log_is_a_config_that_replays(tmp_path):
    cfg = parse(["--config_path", str(ROOT / "config/smoke.yaml"), "--ipc", "3",
                 "--set", "condense.niter=4"])
    save_config(cfg, tmp_path / "args.log", {"stage": "condense", "argv": ["--ipc", "3"],
                                             "world_size": 2})
    replayed = load_config(str(tmp_path / "args.log"))
    assert replayed == cfg
    from utils.config import config_notes
    assert "world size 2" in config_notes(replayed)[0]
    # flags still apply on top of a replay
    assert load_config(str(tmp_path / "args.log"), [("condense.niter", 5)]).condense.niter == 5


def test_ipc_flag_applies_the_ipc_layer_below_the_files_own_keys(tmp_path):
    from utils.config import config_notes
    own = write(tmp_path / "mine.yaml", f"base: {ROOT / 'config/datasets/custom.yaml'}\n"
                "dataset:\n  path: x.csv\ncondense:\n  niter: 30\n")
    plain = load_config(own)
    assert (plain.condense.init, plain.optimization.lr_img) == ("random", 0.1)   # the base's
    assert config_notes(plain) == []
    tuned = load_config(own, [("condense.ipc", 10)])
    shared = load_config(str(ROOT / "config/ipc10/_shared.yaml"))
    assert tuned.condense.ipc == 10 and tuned.condense.init == shared.condense.init == "herding"
    assert tuned.optimization.lr_img == shared.optimization.lr_img == 0.01
    assert tuned.condense.niter == 30                        # the file's own key wins
    (note,) = config_notes(tuned)
    assert "applied the per-ipc layer config/ipc10/_shared.yaml for --ipc 10" in note
    # the file's own condense.ipc chooses the layer too
    own50 = write(tmp_path / "mine50.yaml", f"base: {ROOT / 'config/datasets/custom.yaml'}\n"
                  "condense:\n  ipc: 50\n")
    assert "config/ipc50/_shared.yaml" in config_notes(load_config(own50))[0]
    # a config that already includes an ipc layer keeps it; --ipc changes the ipc only
    kept = load_config(str(ROOT / "config/ipc10/bbc.yaml"), [("condense.ipc", 50)])
    assert kept.condense.ipc == 50 and "already includes" in config_notes(kept)[0]
    assert kept.condense.niter == load_config(str(ROOT / "config/ipc10/bbc.yaml")).condense.niter
    # an ipc without shipped settings says so
    assert "no shipped settings for ipc 5" in config_notes(load_config(own, [("condense.ipc", 5)]))[0]


def test_reuters_config_reads_the_offline_copy():
    """config/ipc{1,10}/reuters.yaml read the multi-label Reuters beside the checkout (no network)."""
    from utils.data import load_text_dataset
    for ipc in (1, 10):
        cfg = load_config(str(ROOT / f"config/ipc{ipc}/reuters.yaml"))
        assert cfg.condense.ipc == ipc and cfg.dataset.is_multilabel
    ds = load_text_dataset(cfg.dataset)
    assert ds.multilabel and ds.nclass == 90
    assert (len(ds.train_texts), len(ds.test_texts)) == (7769, 3019)
    per_class = [sum(c in y for y in ds.train_labels) for c in range(90)]
    assert sum(n < 5 for n in per_class) == 20 and min(per_class) >= 1
    assert any(len(y) > 1 for y in ds.train_labels)          # documents with several topics
