"""`condense.init: generated`: candidates written by a causal LM prompted with real examples of
the class, selected on the expert's features. A tiny random causal LM (saved here with the
packaged tokenizer) stands in for SmolLM2 in the pipeline test; the real SmolLM2 (`make models`)
is checked when it is assembled."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import textcondense as tc
from condense import condense_script_text
from condenser.expert_pool import ExpertPool
from condenser.init import INITS
from condenser.init_context import InitContext
from condenser.init_generated import generate_texts, init_generated, release_generators
from tests.conftest import SMOKE
from utils.config import UserError, load_config
from utils.config_schema import NetworkConfig
from utils.data import TokenizedSplit, class_indices
from utils.distributed import DistEnv
from utils.model import load_tokenizer
from utils.offline_models import smollm2_dir
from utils.runtime import load_data
from utils.text_sets import decode_synset, normalise, save_text_set

TEXTS = ["the market rose as shares of banks gained", "profits fell at the car maker",
         "the striker scored twice in the final", "the team lost the cup match at home"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(NetworkConfig())                 # the packaged MiniLM tokenizer


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory, tokenizer) -> str:
    """A 1-layer random Llama over the packaged tokenizer's vocabulary, saved as a model folder."""
    out = tmp_path_factory.mktemp("tiny_generator")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=512))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def context(tokenizer, generator: str, **options) -> InitContext:
    enc = tokenizer(TEXTS, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    labels = torch.tensor([0, 0, 1, 1])
    train = TokenizedSplit(enc["input_ids"], enc["attention_mask"], labels, class_indices(labels, 2))
    table = torch.randn(tokenizer.vocab_size, 8)
    feats = lambda ids, mask: table[ids].mean(1)             # noqa: E731  [n, 8]
    return InitContext(train, table, tokenizer.cls_token_id, tokenizer.sep_token_id,
                       tokenizer.pad_token_id, 2, False, seed=3,
                       options=INITS.options("generated", {"generator": generator, **options}),
                       text_features=feats, tokenizer=tokenizer, class_names=["business", "sport"])


def test_candidates_are_seeded_new_and_selected(tokenizer, tiny_generator):
    ctx = context(tokenizer, tiny_generator, candidates=3, max_new_tokens=6, batch_size=2)
    first = generate_texts(ctx, 0, 5)
    assert first == generate_texts(ctx, 0, 5)               # seeded by the class: reproducible
    assert first != generate_texts(ctx, 1, 5)               # another class, other prompts
    assert 0 < len(first) <= 5 and all(t.strip() for t in first)
    assert not {normalise(t) for t in first} & {normalise(t) for t in TEXTS}
    state = torch.get_rng_state()
    data = init_generated(ctx, 1, 2)
    assert torch.equal(torch.get_rng_state(), state)        # the global RNG is left alone
    assert data.embeds.shape == (2, 16, 8) and data.labels.tolist() == [1, 1]
    ids = torch.cdist(data.embeds.flatten(0, 1), ctx.word_embeddings).argmin(-1).view(2, 16)
    assert (ids[:, 0] == tokenizer.cls_token_id).all()      # tokenised as a tokenizer writes it
    # the kept two are k-means' picks among the class's candidates, in the expert's features
    from utils.kmeans_select import kmeans_select
    from utils.seeding import derive_seed
    texts = generate_texts(ctx, 1, 2 * 3)
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    pick = kmeans_select(ctx.text_features(enc["input_ids"], enc["attention_mask"]), 2,
                         derive_seed(ctx.seed, "select", "generated", 1))
    assert torch.equal(data.embeds, ctx.word_embeddings[enc["input_ids"][pick]])
    release_generators()


def test_options_are_checked_by_name():
    with pytest.raises(UserError, match="prompt"):
        INITS.options("generated", {"prompt": "no fields here"}, where="condense.init_options")
    with pytest.raises(UserError, match="example"):
        INITS.options("generated", {"example": "no text field"}, where="condense.init_options")
    with pytest.raises(UserError, match="candidates"):
        INITS.options("generated", {"candidates": 0}, where="condense.init_options")


def test_pipeline_saves_a_set_of_generated_text(tmp_path, smoke_experts, tiny_generator):
    opts = json.dumps({"generator": tiny_generator, "candidates": 2, "max_new_tokens": 8})
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(tmp_path),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--set", "condense.init=generated",
                                      "--set", f"condense.init_options={opts}",
                                      "--niter", "0", "--tokens"]) == 0
    # niter 0: the selection itself is the set (generate-and-select, no optimisation)
    syn = tc.load_synset(tmp_path / "distilled_data" / "syn_data_0.pth")
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["final_iteration"] == 0 and summary["synthetic_set"].endswith("syn_data_0.pth")
    assert syn["meta"]["tokens"] and syn["inputs_embeds"].shape[0] == 10       # 5 classes x ipc 2
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    data = load_data(cfg)
    table = ExpertPool(cfg, 5, DistEnv().device).embedding_table()
    text = decode_synset(syn, data.tokenizer, table, syn["meta"]["class_names"])
    path = save_text_set(text, tmp_path / "set.jsonl", real_texts=data.dataset.train_texts,
                         tokenizer=data.tokenizer)
    meta = json.loads(path.with_suffix(".meta.json").read_text())
    assert meta["no_real_row_copied"] is True and meta["copied_rows"] == []
    assert "generated start" in (tmp_path / "print.log").read_text()


def test_smollm2_writes_a_candidate(tokenizer):
    if not (smollm2_dir() / "config.json").is_file():
        pytest.skip(f"SmolLM2-135M-Instruct is not assembled in {smollm2_dir()} (run `make models`)")
    ctx = context(tokenizer, "smollm2", candidates=1, max_new_tokens=12, batch_size=1)
    texts = generate_texts(ctx, 1, 1)
    release_generators()
    assert len(texts) == 1 and len(texts[0].split()) >= 2
