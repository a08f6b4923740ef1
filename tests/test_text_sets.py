"""Sets as text: decoding to nearest tokens, the verbatim-copy flag, the JSON-lines round trip."""
from __future__ import annotations

import json

import torch

from utils.config_schema import NetworkConfig
from utils.model import load_tokenizer
from utils.text_sets import decode_synset, load_text_set, save_text_set

REAL = ["Shares in the bank rose sharply after profits doubled.",
        "The striker scored twice as the home side won the cup final."]


def _set_from(tok, table, texts, noise: float = 0.0):
    batch = tok(texts, padding="max_length", max_length=24, truncation=True, return_tensors="pt")
    embeds = table[batch.input_ids] + noise * torch.randn(*batch.input_ids.shape, table.shape[1],
                                                          generator=torch.Generator().manual_seed(0))
    return {"inputs_embeds": embeds, "attention_mask": batch.attention_mask,
            "labels": torch.arange(len(texts)), "class_of": torch.arange(len(texts)),
            "meta": {"dataset": "toy", "ipc": 1, "iteration": 0, "model": "random"}}


def test_a_set_started_from_real_rows_decodes_to_them_and_is_flagged(tmp_path):
    tok = load_tokenizer(NetworkConfig(model_path="random"))
    table = torch.randn(tok.vocab_size, 32, generator=torch.Generator().manual_seed(1))
    ts = decode_synset(_set_from(tok, table, REAL), tok, table, ["business", "sport"])
    assert ts.texts[0].startswith("shares in the bank rose sharply")
    path = save_text_set(ts, tmp_path / "set.jsonl", real_texts=REAL, tokenizer=tok)
    meta = json.loads(path.with_suffix(".meta.json").read_text())
    assert meta["copied_rows"] == [0, 1] and meta["no_real_row_copied"] is False
    back = load_text_set(path)
    assert back.texts == ts.texts and back.labels == [0, 1] and back.class_names == ["business", "sport"]
    assert [json.loads(line)["class_name"] for line in path.read_text().splitlines()] == ["business", "sport"]


def test_a_set_moved_far_from_its_start_is_not_flagged(tmp_path):
    tok = load_tokenizer(NetworkConfig(model_path="random"))
    table = torch.randn(tok.vocab_size, 32, generator=torch.Generator().manual_seed(1))
    ts = decode_synset(_set_from(tok, table, REAL, noise=3.0), tok, table, ["business", "sport"])
    assert ts.texts[0] != decode_synset(_set_from(tok, table, REAL), tok, table, ["b", "s"]).texts[0]
    path = save_text_set(ts, tmp_path / "s.jsonl", REAL, tok)
    meta = json.loads(path.with_suffix(".meta.json").read_text())
    assert meta["copied_rows"] == [] and meta["no_real_row_copied"] is True


def test_export_text_decodes_with_the_encoder_that_made_the_set(tmp_path):
    """tc.export_text: the set's own encoder (meta.model_path, the packaged MiniLM here) gives the
    tokenizer and the embedding table; a set made of its token rows decodes back to its texts."""
    import pytest
    from transformers import AutoModel

    import textcondense as tc
    from utils.model import ModelError, resolve_model_path
    tok = load_tokenizer(NetworkConfig())
    table = AutoModel.from_pretrained(resolve_model_path("all-MiniLM-L6-v2")).get_input_embeddings().weight
    syn = _set_from(tok, table.detach(), REAL)
    syn["meta"].update(model_path="all-MiniLM-L6-v2", class_names=["business", "sport"], tokens=True)
    ts = tc.export_text(syn, tmp_path / "set.jsonl", real_texts=REAL)
    assert [t.rstrip(".") for t in ts.texts] == [t.lower().rstrip(".") for t in REAL]
    meta = json.loads((tmp_path / "set.meta.json").read_text())
    assert meta["tokens"] is True and meta["decoding"].startswith("exact")
    assert meta["copied_rows"] == [0, 1] and meta["no_real_row_copied"] is False
    assert load_text_set(tmp_path / "set.jsonl").texts == ts.texts
    syn["meta"]["model_path"] = "random"
    with pytest.raises(ModelError, match="randomly initialised"):
        tc.export_text(syn, tmp_path / "other.jsonl")
