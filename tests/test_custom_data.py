"""Bring your own data: config/datasets/custom.yaml on a local CSV (class names as labels) and a
JSONL folder (integer labels), condensed and evaluated; ambiguous folders are refused."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from condense import condense_script_text, evaluate_script_text
from tests.conftest import ROOT
from utils.readers import read_bbc

CUSTOM = str(ROOT / "config" / "datasets" / "custom.yaml")
TINY = ["--set", "network.model_path=random", "--set", "dataset.max_length=16",
        "--set", "dataset.batch_real=4", "--set", "pretrain.epochs=1", "--set", "pretrain.lr=1e-3",
        "--set", "pretrain.batch_size=8", "--set", "condense.niter=3", "--set",
        "condense.objectives=[{name: feature_match, options: {num_freqs: 32}}, {name: calibration}]",
        "--set", "evaluate.num_eval=2", "--set", "evaluate.steps=4", "--set", "evaluate.eval_every=2"]


@pytest.fixture(scope="module")
def articles():
    """Real text: 14 BBC articles (first 200 characters) of each of 3 classes."""
    texts, labels, names = read_bbc()
    out = []
    for c in range(3):
        out += [(t[:200], names[c]) for t, y in zip(texts, labels) if y == c][:14]
    return out


def run_both(tmp: Path, path: Path, *extra: str) -> dict:
    common = ["--config_path", CUSTOM, "--set", f"dataset.path={path}",   # nclass: from the data
              "--set", f"pretrain.expert_dir={tmp / 'experts'}", *TINY, *extra]
    cond = tmp / "condense"
    assert condense_script_text.main([*common, "--ipc", "1", "--output_dir", str(cond)]) == 0
    syn = cond / "distilled_data" / "syn_data_3.pth"
    ev = tmp / "evaluate"
    assert evaluate_script_text.main([*common, "--ipc", "1", "--output_dir", str(ev), "--load_path",
                                      str(syn), "--baseline", "random",
                                      "--set", f"evaluate.results_table={tmp / 'r.md'}"]) == 0
    return {e["method"]: e for e in json.loads((ev / "eval" / "results.json").read_text())}


def test_csv_file_with_class_names(tmp_path, articles):
    path = tmp_path / "news.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["body", "topic"])
        w.writerows(articles)
    res = run_both(tmp_path, path, "--set", "dataset.text_column=body",
                   "--set", "dataset.label_column=topic")
    assert set(res) == {"synthetic", "random"} and res["synthetic"]["n_train"] == 3
    import torch
    syn = torch.load(tmp_path / "condense" / "distilled_data" / "syn_data_3.pth", weights_only=True)
    assert syn["meta"]["class_names"] == ["business", "entertainment", "politics"]
    assert syn["meta"]["dataset"] == "custom"


def test_jsonl_folder_with_integer_labels(tmp_path, articles):
    folder = tmp_path / "data"
    folder.mkdir()
    names = sorted({y for _, y in articles})
    rows = [{"text": t, "label": names.index(y)} for t, y in articles]
    for split, part in (("train", rows[0::2] + rows[1::4]), ("test", rows[3::4])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    res = run_both(tmp_path, folder)
    assert res["synthetic"]["num_eval"] == 2 and res["synthetic"]["n_train"] == 3
    assert 0.0 <= res["random"]["mean"] <= 1.0
    # integer labels are the classes, named by their numbers in order, one sequence each
    import torch
    syn = torch.load(tmp_path / "condense" / "distilled_data" / "syn_data_3.pth", weights_only=True)
    assert syn["meta"]["class_names"] == ["0", "1", "2"]
    assert sorted(syn["class_of"].tolist()) == [0, 1, 2]


def test_ambiguous_folder_names_the_candidates(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.txt").write_text("1 a fine film\n0 a dull film\n")
    (folder / "train.jsonl").write_text('{"text": "x", "label": 0}\n')
    code = condense_script_text.main(["--config_path", CUSTOM, "--set", f"dataset.path={folder}",
                                      "--set", "dataset.nclass=2", "--output_dir",
                                      str(tmp_path / "out"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "train.jsonl, train.txt" in err and "dataset.format" in err
