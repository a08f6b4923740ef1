"""Dynamic padding: batches cut to their longest row give the model's untrimmed outputs, for
training inputs, scoring (length-sorted batches, results back in order), expert features and
attention labels."""
from __future__ import annotations

import pytest
import torch

from utils.config_schema import NetworkConfig
from utils.coreset import expert_features
from utils.model import build_classifier
from utils.training import Examples, attention_label_loss_fn, by_length, padded_length, predict_logits


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_classifier(NetworkConfig(model_path="random", pooling="mean"), num_labels=3).eval()


@pytest.fixture(scope="module")
def examples():
    """20 rows of 16 positions, right-padded to lengths 2..16 (the packaged tokenizer's layout)."""
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(2, 17, (20,), generator=g)
    lengths[0] = 16
    mask = (torch.arange(16)[None, :] < lengths[:, None]).long()     # [20, 16]
    ids = torch.randint(1000, 2000, (20, 16), generator=g) * mask    # pad id 0
    return Examples(mask, torch.randint(0, 3, (20,), generator=g), input_ids=ids)


def test_padded_length():
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    assert padded_length(mask) == 3
    assert padded_length(torch.zeros(2, 5, dtype=torch.long)) == 1
    assert padded_length(torch.tensor([[1, 0, 1, 0]])) == 3         # a hole is kept, not cut


def test_inputs_are_cut_to_the_longest_row(examples):
    idx = (examples.attention_mask.sum(1) <= 8).nonzero().flatten()[:4]
    kw = examples.inputs(idx, torch.device("cpu"))
    longest = int(examples.attention_mask[idx].sum(1).max())
    assert kw["input_ids"].shape == kw["attention_mask"].shape == (len(idx), longest) and longest < 16
    assert examples.inputs(idx, torch.device("cpu"), trim=False)["input_ids"].shape[1] == 16


def test_by_length_covers_every_row_once(examples):
    batches = list(by_length(examples.attention_mask, 6))
    assert sorted(torch.cat(batches).tolist()) == list(range(20))
    longest = [int(examples.attention_mask[b].sum(1).max()) for b in batches]
    assert longest == sorted(longest) and longest[0] < 16


def test_trimmed_outputs_equal_untrimmed(model, examples):
    dev = torch.device("cpu")
    with torch.no_grad():
        full = torch.cat([model(**examples.inputs(torch.arange(s, s + 5), dev, trim=False)).logits
                          for s in range(0, 20, 5)])
    torch.testing.assert_close(predict_logits(model, examples, 5, dev), full, atol=1e-5, rtol=0)
    with torch.no_grad():
        ref = model(attention_mask=examples.attention_mask, input_ids=examples.input_ids,
                    layer_index=[-1]).features[0]
    feats = expert_features(model, examples.attention_mask, 7, dev, input_ids=examples.input_ids)
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=0)


def test_attention_labels_are_cut_with_the_batch():
    torch.manual_seed(0)
    m = build_classifier(NetworkConfig(model_path="random"), num_labels=3, eager_attention=True)
    m.eval()
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    ex = Examples(mask, torch.tensor([0, 1]), input_ids=torch.randint(1000, 2000, (2, 6)) * mask)
    dev = torch.device("cpu")
    with torch.no_grad():
        targets = torch.stack(m(**ex.inputs(torch.arange(2), dev, trim=False),
                                output_attentions=True).attentions[-1:], 1)     # [2, 1, h, 6, 6]
    loss_fn = attention_label_loss_fn(False, targets, [-1], 1.0)
    idx = torch.arange(2)
    with torch.no_grad():
        cut = loss_fn(m, ex.inputs(idx, dev), ex.labels, idx)
        whole = loss_fn(m, ex.inputs(idx, dev, trim=False), ex.labels, idx)
    torch.testing.assert_close(cut, whole, atol=1e-5, rtol=0)


def test_pad_to_max_length_turns_it_off(examples):
    from utils.training import set_dynamic_padding
    idx = torch.arange(1, 5)
    try:
        set_dynamic_padding(False)
        assert examples.inputs(idx, torch.device("cpu"))["input_ids"].shape[1] == 16
    finally:
        set_dynamic_padding(True)
    assert examples.inputs(idx, torch.device("cpu"))["input_ids"].shape[1] == \
        int(examples.attention_mask[idx].sum(1).max())


def test_length_grouped_batches_cover_every_row_once_and_pad_less():
    """pretrain.group_by_length: one epoch is every row once, in batches of similar length
    (less padding than shuffled batches), seeded, and in a shuffled batch order."""
    from utils.training import epoch_batches, length_grouped_batches
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 65, (1000,), generator=g)                      # [N]

    def batches(seed):
        return list(length_grouped_batches(lengths, 8, torch.Generator().manual_seed(seed),
                                           chunk_batches=10))
    got = batches(1)
    assert sorted(torch.cat(got).tolist()) == list(range(1000))
    assert [len(b) for b in got].count(8) == 125
    assert all(torch.equal(a, b) for a, b in zip(got, batches(1)))            # seeded
    assert not all(torch.equal(a, b) for a, b in zip(got, batches(2)))

    def padded(bs):                  # positions a batch cut to its longest row computes
        return sum(len(b) * int(lengths[b].max()) for b in bs)
    shuffled = list(epoch_batches(1000, 8, torch.Generator().manual_seed(1)))
    assert padded(got) < 0.7 * padded(shuffled)
    firsts = [int(lengths[b].max()) for b in got[:20]]
    assert firsts != sorted(firsts, reverse=True)                              # not long-to-short


def test_group_by_length_trains_an_expert(tmp_path):
    from condense import pretrain_script_text
    from tests.conftest import SMOKE
    assert pretrain_script_text.main(["--config_path", SMOKE, "--group_by_length",
                                      "--set", f"pretrain.expert_dir={tmp_path}",
                                      "--set", "pretrain.num_premodel=1"]) == 0
    import json
    manifest = next(tmp_path.rglob("expert_0/manifest.json"))
    history = json.loads(manifest.read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all(h["train_loss"] > 0 for h in history)
