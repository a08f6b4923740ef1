"""Token-level sets (condense.tokens, PEZ): the projection, its straight-through gradient, the
vocabulary it may use, and a real condensation whose saved set is exactly vocabulary tokens."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from condense import condense_script_text
from condenser.condenser import Condenser
from condenser.expert_pool import ExpertPool
from condenser.tokens import TokenProjection, usable_token_ids
from tests.conftest import SMOKE
from utils.checkpoint import load_latest
from utils.config import load_config
from utils.distributed import DistEnv
from utils.model import load_tokenizer
from utils.runtime import load_data
from utils.text_sets import decode_synset, nearest_tokens


def test_projection_picks_the_nearest_allowed_token_and_passes_the_gradient():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 8, generator=g)
    allowed = torch.ones(50, dtype=torch.bool)
    allowed[[1, 2, 7]] = False                                   # 1 = [CLS], 2 = [SEP] here
    proj = TokenProjection(table, allowed, cls_id=1, sep_id=2)
    e = (table[[5, 3, 7, 12, 9, 0]] * 2.0 + 0.01 * torch.randn(6, 8, generator=g))[None]  # [1, 6, 8]
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    ids = proj.ids(e, mask)[0]
    assert ids[0] == 1 and ids[4] == 2                           # [CLS] first, [SEP] last attended
    assert ids[1] == 3 and ids[3] == 12 and ids[2] != 7          # nearest; 7 is not allowed
    cos = F.normalize(e[0, 2], dim=0) @ F.normalize(table, dim=1).T
    cos[[1, 2, 7]] = -2
    assert ids[2] == cos.argmax() and ids[5] == 0                # padding positions project too
    assert torch.equal(proj.hard(e, mask)[0], table[ids])
    x = e.clone().requires_grad_(True)
    w = torch.randn(1, 6, 8, generator=g)
    out = proj(x, mask)
    assert torch.equal(out.detach()[0], table[ids])              # forward: exactly the tokens
    (out * w).sum().backward()
    assert torch.equal(x.grad, w)                                # backward: identity


def test_usable_tokens_leave_out_special_and_unused_slots():
    tok = load_tokenizer(load_config(SMOKE).network)
    allowed = usable_token_ids(tok)
    vocab = tok.get_vocab()
    for special in (tok.pad_token_id, tok.mask_token_id, tok.unk_token_id, tok.cls_token_id,
                    tok.sep_token_id, vocab["[unused0]"]):
        assert not allowed[special]
    assert allowed[vocab["the"]] and allowed[vocab["##s"]]


def test_token_level_condensation_saves_vocabulary_tokens(tmp_path, smoke_experts):
    out = tmp_path / "run"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out), "--tokens",
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--set", "optimization.lr_img=50"]) == 0
    syn = torch.load(out / "distilled_data" / "syn_data_6.pth", weights_only=True)
    assert syn["meta"]["tokens"] is True
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    data = load_data(cfg)
    table = ExpertPool(cfg, 5, DistEnv().device).embedding_table()
    ids = nearest_tokens(syn["inputs_embeds"], table)
    assert torch.equal(syn["inputs_embeds"], table[ids])          # every position is a token row
    tok = data.tokenizer
    allowed = usable_token_ids(tok)
    mask = syn["attention_mask"].bool()
    assert bool((ids[:, 0] == tok.cls_token_id).all())
    last = mask.long().cumsum(1).argmax(1)
    assert bool((ids[torch.arange(len(ids)), last] == tok.sep_token_id).all())
    inner = mask.clone()
    inner[:, 0] = False
    inner[torch.arange(len(ids)), last] = False
    assert bool(allowed[ids[inner]].all())                      # inside: ordinary tokens only
    # the text export carries the trained tokens: decoding drops [CLS]/[SEP] and nothing else
    text = decode_synset(syn, tok, table, syn["meta"]["class_names"])
    assert len(text) == len(syn["class_of"]) and all(t.strip() for t in text.texts)
    assert tok(text.texts[0], add_special_tokens=False).input_ids[:3] == ids[0][inner[0]][:3].tolist()
    # the optimisation moved tokens (the checkpoint keeps the continuous copy underneath)
    start = torch.load(out / "distilled_data" / "syn_data_3.pth", weights_only=True)
    assert not torch.equal(start["inputs_embeds"], syn["inputs_embeds"])
    _, state = load_latest(out)
    continuous = torch.cat([state["data"][c]["embeds"] for c in sorted(state["data"])])
    assert not torch.equal(continuous, syn["inputs_embeds"])
    proj = TokenProjection(table, allowed, tok.cls_token_id, tok.sep_token_id)
    assert torch.equal(proj.hard(continuous, syn["attention_mask"]), syn["inputs_embeds"])


def test_objectives_see_the_projection(smoke_experts):
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts), ("condense.tokens", True)])
    data = load_data(cfg)
    env = DistEnv()
    cond = Condenser(cfg, env, data.train, ExpertPool(cfg, 5, env.device), list(range(5)))
    cond.initialize("noise", cond.init_context(data.tokenizer, 5, False))
    d = cond.shard.class_data(0)
    table = cond.pool.embedding_table()
    seen = d.embeds.detach()
    assert torch.equal(seen, table[nearest_tokens(seen, table)])            # projected
    assert not torch.equal(seen, cond.shard.data[0].embeds.detach())        # the copy is continuous
    before = cond.shard.data[0].embeds.detach().clone()
    cond.step()
    assert not torch.equal(before, cond.shard.data[0].embeds.detach())     # gradients reach the copy
