"""What every evaluation run needs, built once per run (`make_context`): the encoder the
classifiers start from, the tokenised splits (re-tokenised for another encoder's tokenizer), the
validation slice, and the expert that relabels every method (label_mode expert_soft) or gives
attention labels; plus those labels themselves. The protocol that uses it: `evaluation.protocol`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from evaluation.selectors import load_feature_expert
from utils.config import PROJECT_ROOT
from utils.config_schema import Config, NetworkConfig
from utils.data import TokenizedSplit, class_indices, first_label, tokenize_dataset
from utils.distributed import DistEnv
from utils.errors import UserError
from utils.experts import ensure_experts
from utils.io import check_local_path
from utils.model import (
    ModelError,
    TextClassifier,
    classifier_name,
    load_bert_config,
    load_tokenizer,
    resolve_model_path,
)
from utils.seeding import derive_seed
from utils.training import Examples

logger = logging.getLogger(__name__)


class EvaluationError(UserError):
    """The evaluation cannot run as asked; the message says what to change."""


# ------------------------------------------------------------------------- encoder and splits

def _resolve_model_location(path: str) -> str:
    """A relative eval_model_path that exists (from the current directory, else the project root)
    becomes an absolute path; anything else (an alias, 'random', a hub name) stays as it is."""
    if path == "random" or os.path.isabs(path):
        return path
    for base in (Path.cwd(), PROJECT_ROOT):
        if (base / path).exists():
            return str(base / path)
    return path


def eval_network(cfg: Config) -> NetworkConfig:
    """The encoder the evaluation classifiers start from (network, or evaluate.eval_model_path)."""
    path = cfg.evaluate.eval_model_path
    if not path:
        return cfg.network
    check_local_path(_resolve_model_location(path), "evaluate.eval_model_path (--eval_model_path)")
    return dataclasses.replace(cfg.network, model_path=_resolve_model_location(path))


def encoder_hidden_size(net: NetworkConfig) -> int:
    if net.model_path == "random":
        return net.random_hidden
    return int(load_bert_config(resolve_model_path(net.model_path)).hidden_size)


def _eval_tokenizer(net: NetworkConfig, fallback):
    """The eval encoder's own tokenizer; the run's tokenizer when its folder has none."""
    if net.model_path == "random":
        return load_tokenizer(net)
    try:
        return load_tokenizer(dataclasses.replace(net, tokenizer_path=None))
    except ModelError:
        if net.tokenizer_path:
            return load_tokenizer(net)
        logger.warning("%s has no tokenizer; using the run's tokenizer", net.model_path)
        return fallback


def subset(split: TokenizedSplit, idx: Sequence[int], nclass: int) -> TokenizedSplit:
    idx = torch.as_tensor(list(idx), dtype=torch.long)
    labels = split.labels[idx]
    return TokenizedSplit(split.input_ids[idx], split.attention_mask[idx], labels,
                          class_indices(labels, nclass))


def validation_indices(labels: torch.Tensor, fraction: float, seed: int) -> List[int]:
    """Stratified (first label for multi-label), seeded choice of `fraction` of each class of the
    TRAINING split; a class with a single sample keeps it for training."""
    by_class: Dict[int, List[int]] = {}
    for i, y in enumerate(labels.tolist()):
        stratum = first_label([c for c, v in enumerate(y) if v > 0]) if isinstance(y, list) else y
        by_class.setdefault(stratum, []).append(i)
    rng = random.Random(seed)
    out: List[int] = []
    for c in sorted(by_class):
        idx = by_class[c][:]
        rng.shuffle(idx)
        k = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0
        out += idx[:k]
    return sorted(out)


def run_validation_indices(cfg: Config, labels: torch.Tensor) -> List[int]:
    """The run's validation slice of the training split (select_by 'val'): the same for the
    evaluation, the baselines' pools and the condensation that holds it out."""
    return validation_indices(labels, cfg.evaluate.val_fraction,
                              derive_seed(cfg.run.seed, "validation"))


@dataclass
class EvalContext:
    """What every evaluation run needs: config, ranks, encoder, and the tokenised splits (with the
    eval encoder's tokenizer; sample order as in `Data`, so training indices are shared)."""
    cfg: Config
    env: DistEnv
    net: NetworkConfig
    nclass: int
    multilabel: bool
    class_names: List[str]
    train: TokenizedSplit
    test: TokenizedSplit
    val: Optional[TokenizedSplit]
    val_idx: List[int]
    vocab_size: int
    hidden_size: int
    label_expert: Optional[TextClassifier] = None   # label_mode expert_soft: relabels every method
    attention_expert: Optional[TextClassifier] = None   # attention_weight > 0: attention labels
    rounds: int = 0       # evaluate_runs calls so far: the rank that gets the spare run rotates

    @property
    def model(self) -> str:
        return classifier_name(self.net)

    def selectable(self) -> List[int]:
        """Training indices the methods may train on (the training split minus validation)."""
        held = set(self.val_idx)
        return [i for i in range(len(self.train)) if i not in held]


def make_context(cfg: Config, env: DistEnv, data) -> EvalContext:
    net = eval_network(cfg)
    train, test, tokenizer = data.train, data.test, data.tokenizer
    if net is not cfg.network:
        tok = _eval_tokenizer(net, data.tokenizer)
        if tok is not data.tokenizer and tok.get_vocab() != data.tokenizer.get_vocab():
            logger.info("re-tokenising the data with the tokenizer of %s", net.model_path)
            train, test = tokenize_dataset(data.dataset, tok, cfg.dataset.max_length,
                                           cfg.dataset.cache_dir)
            tokenizer = tok
    nclass = data.dataset.nclass
    val_idx: List[int] = []
    val = None
    if cfg.evaluate.select_by == "val":
        val_idx = run_validation_indices(cfg, data.train.labels)
        val = subset(train, val_idx, nclass)
    ev = cfg.evaluate
    expert = None
    if ev.label_mode == "expert_soft" or ev.attention_weight > 0:
        if train is not data.train:
            raise EvaluationError("label_mode expert_soft and attention labels need an eval "
                                  "encoder that shares the experts' tokenizer "
                                  "(evaluate.eval_model_path)")
        ensure_experts(cfg, env, data)                # collective: every rank, same errors
        expert = load_feature_expert(cfg, nclass, env.device, data.tokenizer.vocab_size,
                                     eager_attention=ev.attention_weight > 0)
    return EvalContext(cfg, env, net, nclass, data.dataset.multilabel,
                       list(data.dataset.class_names), train, test, val, val_idx,
                       tokenizer.vocab_size, encoder_hidden_size(net),
                       expert if ev.label_mode == "expert_soft" else None,
                       expert if ev.attention_weight > 0 else None)


def label_protocol(ev) -> str:
    """The name of the label protocol in results: 'hard' / 'expert_soft', plus '+attn<w>' with
    attention labels of weight w."""
    return ev.label_mode + (f"+attn{ev.attention_weight:g}" if ev.attention_weight > 0 else "")


@torch.no_grad()
def expert_soft_labels(ctx: EvalContext, ts: Examples) -> Examples:
    """`ts` with its labels replaced by the label expert's softened predictions
    softmax(logits / T) (sigmoid for multi-label)  # labels [N, C] float"""
    ev, dev, model = ctx.cfg.evaluate, ctx.env.device, ctx.label_expert
    out = []
    for s in range(0, len(ts), ev.eval_batch_size):
        idx = torch.arange(s, min(s + ev.eval_batch_size, len(ts)))
        logits = model(**ts.inputs(idx, dev)).logits.float() / ev.label_temperature   # [b, C]
        out.append((torch.sigmoid(logits) if ctx.multilabel else logits.softmax(-1)).cpu())
    labels = torch.cat(out)
    if ts.inputs_embeds is not None:
        return Examples(ts.attention_mask, labels, inputs_embeds=ts.inputs_embeds,
                        class_of=ts.class_of)
    return Examples(ts.attention_mask, labels, input_ids=ts.input_ids, class_of=ts.class_of)


@torch.no_grad()
def expert_attention_labels(ctx: EvalContext, ts: Examples) -> torch.Tensor:
    """The attention expert's attention maps on every example of `ts`, for the layers
    `evaluate.attention_layers`, stored in float16 (probabilities)
    -> [N, len(attention_layers), heads, L, L]"""
    ev, dev, model = ctx.cfg.evaluate, ctx.env.device, ctx.attention_expert
    n_layers = model.num_layers
    for layer in ev.attention_layers:
        if not -n_layers <= layer < n_layers:
            raise EvaluationError(f"evaluate.attention_layers has {layer}, but the expert has "
                                  f"{n_layers} layers (use 0..{n_layers - 1} or -1..-{n_layers})")
    out = []
    for s in range(0, len(ts), ev.eval_batch_size):
        idx = torch.arange(s, min(s + ev.eval_batch_size, len(ts)))
        # untrimmed: every batch keeps the full length L, so the maps stack
        attentions = model(**ts.inputs(idx, dev, trim=False), output_attentions=True).attentions
        out.append(torch.stack([attentions[layer] for layer in ev.attention_layers], 1)
                   .to(torch.float16).cpu())                             # [b, K, h, L, L]
    return torch.cat(out)
