"""The second offline encoder (all-mpnet-base-v2, assembled by `make models`)."""
from __future__ import annotations

import pytest
import torch

from utils.config_schema import NetworkConfig
from utils.model import ModelError, build_classifier, load_tokenizer, resolve_model_path
from utils.offline_models import mpnet_dir


def test_missing_alias_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTCONDENSE_MODEL_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="make models"):
        resolve_model_path("all-mpnet-base-v2")
    # a hub name is passed through untouched (a user with a network gets the hub's copy)
    assert resolve_model_path("sentence-transformers/all-mpnet-base-v2") == \
        "sentence-transformers/all-mpnet-base-v2"


def test_alias_resolves_to_the_assembled_folder():
    if not (mpnet_dir() / "config.json").is_file():
        pytest.skip(f"all-mpnet-base-v2 is not assembled in {mpnet_dir()} (run `make models`)")
    assert resolve_model_path("mpnet") == resolve_model_path("all-mpnet-base-v2") == str(mpnet_dir())


@pytest.fixture(scope="module")
def mpnet_net() -> NetworkConfig:
    if not (mpnet_dir() / "config.json").is_file():
        pytest.skip(f"all-mpnet-base-v2 is not assembled in {mpnet_dir()} (run `make models`)")
    return NetworkConfig(model_path="mpnet", pooling="mean")


def test_mpnet_classifier_takes_ids_and_embeds_alike(mpnet_net):
    tok = load_tokenizer(mpnet_net)
    assert tok("the")["input_ids"][1] == 2000                  # not BERT's 1996: other ids
    model = build_classifier(mpnet_net, num_labels=3).eval()
    assert model.hidden_size == 768 and model.num_layers == 12
    assert model.encoder.config._attn_implementation == "eager"   # MPNet has no SDPA kernel
    batch = tok(["a short question?", "a somewhat longer sentence about the economy"],
                padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        by_ids = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       layer_index=[0, -1])
        by_embeds = model(inputs_embeds=model.embed(batch.input_ids),
                          attention_mask=batch.attention_mask, layer_index=[0, -1])
    assert by_ids.features.shape == (2, 2, 768)
    torch.testing.assert_close(by_ids.logits, by_embeds.logits, atol=1e-5, rtol=1e-4)
