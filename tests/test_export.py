"""Sets and experts outside the repo: the portable set copy, the datasets.Dataset view, experts
as Hugging Face folders with the same logits, and the stock-HF Trainer example."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import textcondense as tc
from tests.conftest import ROOT, SMOKE
from utils.config import load_config
from utils.experts import expert_set_dir, load_expert_weights
from utils.hf_export import expert_hf_dir, save_hf_folder, to_hf_classifier
from utils.model import build_classifier, load_tokenizer
from utils.synset import SyntheticDataError, build_synset, make_meta, save_synset

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def small_set(tmp_path, labels="hard", hidden=32, L=16):
    gen = torch.Generator().manual_seed(0)
    per = {}
    for c in range(3):
        y = torch.full((2,), c) if labels == "hard" else torch.softmax(torch.randn(2, 3, generator=gen), 1)
        mask = torch.ones(2, L, dtype=torch.long)
        mask[:, L - 3:] = 0
        per[c] = {"embeds": torch.randn(2, L, hidden, generator=gen), "mask": mask, "labels": y}
    meta = make_meta(dataset="toy", class_names=["a", "b", "c"], ipc=2, iteration=5,
                     model="random-L2-H32", model_path="random", max_length=L, hidden_size=hidden,
                     factor=1, decode_type="single", multilabel=False, method="ncfm")
    path = tmp_path / "distilled_data" / "syn_data_5.pth"
    syn = build_synset(per, [0, 1, 2], meta)
    save_synset(syn, path)
    return syn, path


def test_saved_set_has_a_portable_copy_that_loads_the_same(tmp_path):
    syn, path = small_set(tmp_path)
    st, meta_json = path.with_suffix(".safetensors"), path.with_suffix(".json")
    assert st.is_file() and meta_json.is_file()
    assert json.loads(meta_json.read_text())["class_names"] == ["a", "b", "c"]
    from safetensors.torch import load_file  # readable without this package
    raw = load_file(str(st))
    assert set(raw) == {"inputs_embeds", "attention_mask", "labels", "class_of"}
    a, b = tc.load_synset(path), tc.load_synset(st)
    for key in raw:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], syn[key])
    assert a["meta"] == b["meta"]
    meta_json.unlink()
    with pytest.raises(SyntheticDataError, match="missing"):
        tc.load_synset(st)


def test_to_hf_dataset_columns(tmp_path):
    syn, path = small_set(tmp_path)
    ds = tc.to_hf_dataset(path)
    assert ds.column_names == ["inputs_embeds", "attention_mask", "labels"] and len(ds) == 6
    assert ds.features["labels"].names == ["a", "b", "c"]
    row = ds[0]
    assert row["inputs_embeds"].shape == (16, 32) and row["inputs_embeds"].dtype == torch.float32
    assert torch.equal(ds[:]["inputs_embeds"], syn["inputs_embeds"])
    assert ds[:]["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert ds[:]["attention_mask"].sum().item() == 6 * 13
    soft, _ = small_set(tmp_path / "soft", labels="soft")
    sds = tc.to_hf_dataset(soft)
    assert sds[:]["labels"].shape == (6, 3) and torch.allclose(sds[:]["labels"].sum(1), torch.ones(6))


LOGITS_SCRIPT = """
import sys, torch
from transformers import AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
x = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    out = {"ids": model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits,
           "embeds": model(inputs_embeds=x["inputs_embeds"], attention_mask=x["attention_mask"]).logits}
torch.save(out, sys.argv[3])
print(type(model).__module__)
"""


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_exports_to_an_hf_folder_with_the_same_logits(tmp_path, pooling):
    cfg = load_config(SMOKE, [("network.pooling", pooling)])
    tok = load_tokenizer(cfg.network)
    torch.manual_seed(1)
    clf = build_classifier(cfg.network, 3, vocab_size=tok.vocab_size).eval()
    folder = save_hf_folder(to_hf_classifier(clf, ["a", "b", "c"]), tmp_path / "hf", tok)
    assert {"config.json", "model.safetensors", "hf_model.py"} <= set(os.listdir(folder))
    enc = tok(["markets fell sharply", "the match ended in a draw"], padding="max_length",
              max_length=16, return_tensors="pt")
    with torch.no_grad():
        want = clf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        embeds = clf.embed(enc["input_ids"])
    torch.save({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "inputs_embeds": embeds}, tmp_path / "x.pt")
    # a fresh interpreter that never imports this project: the folder's own code (hf_model.py)
    proc = subprocess.run([sys.executable, "-c", LOGITS_SCRIPT, str(folder), str(tmp_path / "x.pt"),
                           str(tmp_path / "y.pt")], cwd=tmp_path, capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": ""}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith("transformers_modules")         # remote code, not ours
    got = torch.load(tmp_path / "y.pt", weights_only=True)
    assert torch.allclose(got["ids"], want, atol=1e-5, rtol=0)
    assert torch.allclose(got["embeds"], want, atol=1e-5, rtol=0)
    # after `import textcondense`, the Auto classes know the model type (no remote code)
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert isinstance(model, tc.TextCondenseForSequenceClassification)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"} and model.config.pooling == pooling
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    labels=torch.tensor([0, 2]))
    assert torch.allclose(out.logits, want, atol=1e-5, rtol=0)
    assert torch.isclose(out.loss, torch.nn.functional.cross_entropy(want, torch.tensor([0, 2])),
                         atol=1e-5)


def test_experts_stage_exports_every_expert(smoke_experts):
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    from transformers import AutoModelForSequenceClassification
    tok = load_tokenizer(cfg.network)
    enc = tok(["shares rose", "a new phone"], padding="max_length", max_length=16, return_tensors="pt")
    for k in range(cfg.pretrain.num_premodel):
        folder = expert_hf_dir(cfg, k)
        assert folder.parent.parent == expert_set_dir(cfg) and (folder / "config.json").is_file()
        clf = build_classifier(cfg.network, 5, pretrained=False, vocab_size=tok.vocab_size)
        clf.load_state_dict(load_expert_weights(cfg, k, cfg.pretrain.epochs))
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        assert model.config.id2label[0] == "business"
        with torch.no_grad():
            want = clf.eval()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            got = model(**enc).logits
        assert torch.allclose(got, want, atol=1e-5, rtol=0)


def test_example_trains_a_stock_hf_model_on_a_set(tmp_path):
    """examples/train_hf_on_set.py: a stock BertForSequenceClassification (tiny, random) trained
    with the HF Trainer on a set of real token embeddings, scored on the smoke test split."""
    pytest.importorskip("accelerate")
    from transformers import BertConfig, BertForSequenceClassification

    tok = load_tokenizer(load_config(SMOKE).network)
    torch.manual_seed(0)
    stock = BertForSequenceClassification(BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=5))
    stock.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    data = tc.load_text_dataset(load_config(SMOKE).dataset)
    per = {}
    for c in range(5):
        texts = [t for t, y in zip(data.train_texts, data.train_labels) if y == c][:2]
        enc = tok(texts, truncation=True, padding="max_length", max_length=16, return_tensors="pt")
        per[c] = {"embeds": stock.bert.embeddings.word_embeddings(enc["input_ids"]).detach(),
                  "mask": enc["attention_mask"], "labels": torch.full((2,), c)}
    meta = make_meta(dataset="bbc", class_names=data.class_names, ipc=2, iteration=0, model="tiny",
                     model_path=str(tmp_path / "tiny"), max_length=16, hidden_size=32, factor=1,
                     decode_type="single", multilabel=False, method="real tokens")
    save_synset(build_synset(per, list(range(5)), meta), tmp_path / "set" / "syn_data_0.pth")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_hf_on_set.py"),
                           "--load_path", str(tmp_path / "set" / "syn_data_0.safetensors"),
                           "--config_path", SMOKE, "--steps", "6", "--lr", "1e-3",
                           "--out", str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                          text=True, env={**ENV, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["test_rows"] == 40 and 0.0 <= scores["test_accuracy"] <= 1.0
    assert math.isfinite(scores["train_loss_first"]) and scores["train_loss_first"] > 0
    trained = BertForSequenceClassification.from_pretrained(tmp_path / "out" / "model").eval()
    assert trained.config.id2label[0] == "business"
    assert not torch.equal(trained.classifier.weight, stock.classifier.weight)   # it trained
    # the reported accuracy is the saved model's on the 40 test texts, scored here afresh
    enc = tok(list(data.test_texts), truncation=True, padding="max_length", max_length=16,
              return_tensors="pt")
    with torch.no_grad():
        pred = trained(**enc).logits.argmax(-1)
    expected = float((pred == torch.tensor(data.test_labels)).float().mean())
    assert scores["test_accuracy"] == pytest.approx(expected)


def test_multi_decode_cuts_each_sequence_into_factor_segments_and_single_keeps_it():
    from utils.synset import ClassData, decode

    embeds = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)   # [ipc=2, L=7, H=3]
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    data = ClassData(embeds, mask, torch.tensor([4, 4]))
    e, m, y = decode(data, 2, "multi")
    assert e.shape == (4, 3, 3) and m.shape == (4, 3) and y.tolist() == [4, 4, 4, 4]
    # segment j of sequence i is positions [3j, 3j+3) of it; the last odd position is dropped
    assert torch.equal(e[1], embeds[0, 3:6]) and torch.equal(e[2], embeds[1, 0:3])
    assert m.tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1]]
    for same in (decode(data, 2, "single"), decode(data, 1, "multi")):
        assert all(a is b for a, b in zip(same, (data.embeds, data.mask, data.labels)))
