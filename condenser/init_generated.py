"""`init: generated`: new text written by a small causal LM, then selected in an expert's space.

Generate-and-select, CondenseLM-style: for each class, `candidates x ipc` texts are sampled from
the generator (default SmolLM2-135M-Instruct, `make models`), each prompted with the class name
and `shots` real examples of the class (decoded from the training split, cut to `shot_words`
words), as a few-shot text to continue (or, with `chat`, an instruction through the chat
template). The candidates are tokenised by the condensation model's tokenizer, embedded by the
expert `evaluate.feature_expert`, and the `ipc` nearest to k-means centroids of the candidates'
features (or herding's picks) start the set. No real row is copied into the set: a candidate equal
to one of its prompt's examples is dropped before selection, and the saved set's text export
(`tc.export_text`) checks the rest against every training text.

The matching objectives then move the set on from the selection; with `condense.tokens` it stays
token sequences, i.e. text that any model reads once exported (`tc.export_text`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Literal

import torch

from condenser.init_context import InitContext, labels_for
from utils.coreset import herding_select
from utils.kmeans_select import kmeans_select
from utils.registry import opt
from utils.seeding import derive_seed
from utils.synset import ClassData, SyntheticDataError
from utils.text_sets import normalise

logger = logging.getLogger(__name__)

# few-shot completion: the examples, then an open "Text:" the generator continues
DEFAULT_EXAMPLE = "Topic: {class_name}\nText: {text}\n\n"
DEFAULT_PROMPT = "{examples}Topic: {class_name}\nText:"


@dataclass
class GeneratedOptions:
    generator: str = opt("smollm2", "Causal LM that writes the candidates: an alias (`smollm2`, "
                                    "from `make models`), a folder or a hub name.")
    candidates: int = opt(8, "Candidates generated per synthetic sequence (ipc x candidates per class).")
    shots: int = opt(2, "Real examples of the class in each prompt.")
    shot_words: int = opt(60, "Words kept of each prompt example.")
    max_new_tokens: int = opt(64, "Generated tokens per candidate (the set keeps dataset.max_length tokens).")
    temperature: float = opt(0.8, "Sampling temperature.")
    top_p: float = opt(0.95, "Nucleus sampling mass.")
    batch_size: int = opt(8, "Candidates generated together.")
    select: Literal["kmeans", "herding"] = opt("kmeans", "How the `ipc` starts are chosen among "
                                                         "the candidates' expert features.")
    example: str = opt(DEFAULT_EXAMPLE, "How each real example is written into the prompt "
                                        "({class_name}, {text}).")
    prompt: str = opt(DEFAULT_PROMPT, "Prompt template with {class_name} and {examples} (the "
                                      "examples written one after another).")
    chat: bool = opt(False, "Send the prompt through the generator's chat template (an "
                            "instruction prompt) instead of continuing it as plain text.")
    stop: str = opt("\n\n", "A candidate ends where this string first appears.")

    def check(self):
        for name in ("candidates", "shots", "shot_words", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                yield name, "must be >= 1"
        if not 0 < self.temperature:
            yield "temperature", "must be > 0"
        if not 0 < self.top_p <= 1:
            yield "top_p", "must be in (0, 1]"
        for field in ("{class_name}", "{examples}"):
            if field not in self.prompt:
                yield "prompt", f"must contain {field}"
        if "{text}" not in self.example:
            yield "example", "must contain {text}"


_GENERATORS: dict = {}


def load_generator(name: str, device: torch.device):
    """(model, tokenizer) of the generator on `device`, loaded once per process (offline aliases
    resolved)."""
    if name not in _GENERATORS:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from utils.offline_models import resolve_offline_alias

        path = resolve_offline_alias(name) or name
        tok = AutoTokenizer.from_pretrained(path)
        tok.padding_side = "left"                           # generation continues the prompt
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        _GENERATORS[name] = (model, tok)
    return _GENERATORS[name]


def release_generators() -> None:
    """Free the generators once the set is initialised (they are not needed afterwards)."""
    _GENERATORS.clear()


def class_examples(ctx: InitContext, c: int, n: int, words: int, gen: torch.Generator) -> List[str]:
    """n real texts of class c (decoded from the training split), each cut to `words` words."""
    pool = ctx.train.class_indices[c]
    if len(pool) == 0:
        raise SyntheticDataError(f"class {c} has no training samples to prompt the generator with")
    idx = pool[torch.randint(len(pool), (n,), generator=gen)]
    out = []
    for i in idx.tolist():
        ids = ctx.train.input_ids[i][ctx.train.attention_mask[i].bool()]
        text = ctx.tokenizer.decode(ids.tolist(), skip_special_tokens=True)
        out.append(" ".join(text.split()[:words]))
    return out


def prompt_ids(tok, text: str, chat: bool) -> List[int]:
    if chat and getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       tokenize=True, return_dict=True)["input_ids"]
    return tok(text)["input_ids"]


@torch.no_grad()
def generate_texts(ctx: InitContext, c: int, n: int) -> List[str]:
    """n candidate texts of class c, seeded by the class (the same on every rank and run)."""
    o: GeneratedOptions = ctx.options
    model, tok = load_generator(o.generator, ctx.device)
    gen = torch.Generator().manual_seed(derive_seed(ctx.class_seed(c), "generated"))
    name = ctx.class_names[c] if ctx.class_names else str(c)
    texts: List[str] = []
    for start in range(0, n, o.batch_size):
        size = min(o.batch_size, n - start)
        shots = [class_examples(ctx, c, o.shots, o.shot_words, gen) for _ in range(size)]
        prompts = [prompt_ids(tok, o.prompt.format(class_name=name, examples="".join(
                       o.example.format(class_name=name, text=s) for s in ex)), o.chat)
                   for ex in shots]
        batch = tok.pad({"input_ids": prompts}, return_tensors="pt").to(ctx.device)
        cuda = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):            # leave the global RNG as it was
            torch.manual_seed(derive_seed(ctx.class_seed(c), "generated", start))
            out = model.generate(**batch, do_sample=True, temperature=o.temperature, top_p=o.top_p,
                                 max_new_tokens=o.max_new_tokens, pad_token_id=tok.pad_token_id)
        for row, ex in zip(out[:, batch["input_ids"].shape[1]:], shots):
            text = tok.decode(row, skip_special_tokens=True).lstrip()
            text = (text.split(o.stop)[0] if o.stop else text).strip()
            if text and normalise(text) not in {normalise(s) for s in ex}:   # no copied example
                texts.append(text)
    return texts


def init_generated(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """The `ipc` generated candidates of class c nearest k-means centroids of their expert
    features (or herding's picks), tokenised by the condensation model's tokenizer."""
    o: GeneratedOptions = ctx.options
    if ctx.tokenizer is None or ctx.text_features is None:
        raise ValueError("init 'generated' needs InitContext.tokenizer and .text_features")
    texts = generate_texts(ctx, c, ipc * o.candidates)
    if len(texts) < ipc:
        raise ValueError(f"init 'generated': class {c} got {len(texts)} usable candidates for ipc "
                         f"{ipc} (raise condense.init_options.candidates or max_new_tokens)")
    L = ctx.train.input_ids.shape[1]
    enc = ctx.tokenizer(texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
    feats = ctx.text_features(enc["input_ids"], enc["attention_mask"])          # [n, H]
    if o.select == "herding":
        pick = herding_select(feats, ipc)
    else:
        pick = kmeans_select(feats, ipc, derive_seed(ctx.seed, "select", "generated", c))
    for i in pick.tolist()[:2]:
        logger.info("class %d (%s) generated start: %s", c,
                    ctx.class_names[c] if ctx.class_names else c, texts[i][:160].replace("\n", " "))
    ids, mask = enc["input_ids"][pick], enc["attention_mask"][pick]
    return ClassData(ctx.word_embeddings[ids].clone(), mask.clone(), labels_for(ctx, c, None, ipc))
