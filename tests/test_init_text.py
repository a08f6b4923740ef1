"""mask_fill and manifold initialisations on real BBC text and the packaged MiniLM embeddings."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from condenser.init_context import InitContext
from condenser.init_text import (
    ManifoldOptions,
    MaskFillOptions,
    class_token_counts,
    init_manifold,
    init_mask_fill,
)
from utils.config_schema import DatasetConfig, NetworkConfig
from utils.data import load_text_dataset, tokenize_dataset
from utils.model import load_tokenizer, packaged_minilm_dir


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    ds = load_text_dataset(DatasetConfig(max_train_per_class=30, max_test_per_class=2))
    tok = load_tokenizer(NetworkConfig())
    train, _ = tokenize_dataset(ds, tok, 32, str(tmp_path_factory.mktemp("cache")))
    table = load_file(str(packaged_minilm_dir() / "model.safetensors"))
    table = next(v for k, v in table.items() if k.endswith("word_embeddings.weight"))
    return train, table, tok


def ctx_for(parts, **options) -> InitContext:
    train, table, tok = parts
    return InitContext(train, table, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, 5,
                       False, seed=3, options=OPTIONS[bool(set(options) & {"latent_dim"})](**options))


OPTIONS = {False: MaskFillOptions, True: ManifoldOptions}   # the options of each init


def token_ids(data, table) -> torch.Tensor:
    """Recover token ids from exact embedding rows  # [ipc, L]"""
    d = torch.cdist(data.embeds.reshape(-1, table.shape[1]), table)
    return d.argmin(-1).view(data.embeds.shape[:2])


@pytest.mark.parametrize("mask_strategy", ["uniform", "random", "important"])
@pytest.mark.parametrize("fill_strategy", ["nearest", "class_vocab"])
def test_mask_fill_replaces_the_asked_fraction(parts, mask_strategy, fill_strategy):
    train, table, tok = parts
    ctx = ctx_for(parts, mask_ratio=0.25, mask_strategy=mask_strategy,
                  fill_strategy=fill_strategy, fill_candidates=5)
    data = init_mask_fill(ctx, 2, 3)
    again = init_mask_fill(ctx, 2, 3)
    assert torch.equal(data.embeds, again.embeds)                       # seeded
    ids = token_ids(data, table)
    # the same real samples as the 'random' init picks, with some tokens replaced
    from condenser.init import init_random
    orig = token_ids(init_random(ctx, 2, 3), table)
    assert torch.equal(data.mask, init_random(ctx, 2, 3).mask)
    special = {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id}
    cls_counts, all_counts = class_token_counts(ctx, 2)
    top_class = set(torch.topk(cls_counts, 5).indices.tolist())
    for i in range(3):
        content = [p for p in range(32) if data.mask[i, p] and int(orig[i, p]) not in special]
        changed = [p for p in range(32) if ids[i, p] != orig[i, p]]
        assert set(changed) <= set(content)                             # specials untouched
        # each masked position gets a different token (fillers may coincide with the original
        # only for class_vocab, where the class's frequent token may already be there)
        assert len(changed) <= round(0.25 * len(content))
        if fill_strategy == "nearest":
            assert len(changed) == round(0.25 * len(content))
            for p in changed:
                sims = torch.nn.functional.normalize(table, dim=-1) @ torch.nn.functional.normalize(
                    table[orig[i, p]], dim=0)
                sims[orig[i, p]] = -2
                assert int(ids[i, p]) in torch.topk(sims, 5).indices.tolist()
        else:
            assert all(int(ids[i, p]) in top_class for p in changed)
        if mask_strategy == "important" and fill_strategy == "nearest":
            spec = (cls_counts + 1) / (all_counts + 1)
            kept = [p for p in content if p not in changed]
            if kept and changed:
                assert min(spec[orig[i, p]] for p in changed) >= max(spec[orig[i, p]] for p in kept) - 1e-6


def test_manifold_picks_distinct_real_samples_of_the_class(parts):
    train, table, _ = parts
    ctx = ctx_for(parts, latent_dim=8)
    data = init_manifold(ctx, 1, 4)
    assert torch.equal(data.embeds, init_manifold(ctx, 1, 4).embeds)
    ids = token_ids(data, table)
    pool = train.class_indices[1]
    rows = [next(int(j) for j in pool if torch.equal(train.input_ids[j], ids[k])) for k in range(4)]
    assert len(set(rows)) == 4                                          # distinct real samples
    assert all(int(train.labels[j]) == 1 for j in rows)                 # of the class
    assert data.labels.tolist() == [1, 1, 1, 1]
