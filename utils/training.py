"""The one trainer: step-based training of a classifier on token ids or `inputs_embeds`.

Experts (epochs over the real data), evaluation classifiers (a fixed number of steps on a tiny
set) and distillation students all train through `train_steps`; what differs is the batches they
are given and the loss (`LossFn`: the model call and the loss in one callable, so a distillation
loss can ask the model for hidden states or attention maps).

Label losses live here once (`label_loss`): cross-entropy for class indices, soft cross-entropy
for label vectors in a single-label task (soft labels), BCE for multi-label tasks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from utils import tracking
from utils.logging_utils import progress
from utils.precision import at_least_fp32, autocast

# ------------------------------------------------------------------------------------ examples

_DYNAMIC_PADDING = {"on": True}     # off: dataset.pad_to_max_length (set by utils.runtime.load_data)


def set_dynamic_padding(on: bool) -> None:
    """Dynamic padding for this process (on by default; off runs every batch at full length)."""
    _DYNAMIC_PADDING["on"] = bool(on)


def padded_length(attention_mask: torch.Tensor) -> int:
    """The length a batch needs (dynamic padding): 1 + the last position any row attends to, at
    least 1. Positions after it are padding in every row, so the model's outputs on the attended
    tokens are the same without them. Reads a CPU mask (no device sync)  # mask [B, L]
    With dynamic padding off (`dataset.pad_to_max_length`), the mask's full length."""
    if not _DYNAMIC_PADDING["on"] or attention_mask.device.type != "cpu":
        return attention_mask.shape[1]          # a device mask is never read: no host sync
    cols = attention_mask.any(0).numpy().nonzero()[0]                    # a CPU read
    return int(cols[-1]) + 1 if len(cols) else 1


def cut_to_length(attention_mask: torch.Tensor, *tensors: torch.Tensor) -> tuple:
    """The batch's mask and `tensors` (ids [B, L] or embeds [B, L, H]) cut to `padded_length`."""
    n = padded_length(attention_mask)
    return (attention_mask[:, :n], *(t[:, :n] for t in tensors))


def by_length(attention_mask: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of row indices in order of attended length, so that rows of similar length share a
    batch and dynamic padding trims the most (for order-free passes: scoring, features)."""
    if not _DYNAMIC_PADDING["on"]:          # dataset.pad_to_max_length: the seed's order too
        order = torch.arange(attention_mask.shape[0])
    else:
        order = attention_mask.sum(1).argsort(stable=True)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


@dataclass
class Examples:
    """What a classifier trains on: real token ids or synthetic input embeddings, with masks and
    labels. Exactly one of `input_ids` / `inputs_embeds` is set."""
    attention_mask: torch.Tensor                  # [N, L]
    labels: torch.Tensor                          # [N] long, or [N, C] float
    input_ids: Optional[torch.Tensor] = None      # [N, L] real data
    inputs_embeds: Optional[torch.Tensor] = None  # [N, L, H] synthetic data
    class_of: Optional[torch.Tensor] = None       # [N] the class each example stands for

    def __post_init__(self):
        if (self.input_ids is None) == (self.inputs_embeds is None):
            raise ValueError("Examples need exactly one of input_ids or inputs_embeds")
        if self.class_of is None:
            self.class_of = (self.labels.argmax(1) if self.labels.dim() == 2 else self.labels).clone()

    def __len__(self) -> int:
        return self.attention_mask.shape[0]

    def inputs(self, idx: torch.Tensor, device: torch.device, trim: bool = True) -> dict:
        """Model keyword arguments of the examples `idx`, on `device`; with `trim`, cut to the
        batch's longest row (`padded_length`: dynamic padding, the same outputs for less work)."""
        key = "inputs_embeds" if self.inputs_embeds is not None else "input_ids"
        mask, x = self.attention_mask[idx], getattr(self, key)[idx]           # [B, L], [B, L(, H)]
        if trim:
            mask, x = cut_to_length(mask, x)
        return {"attention_mask": mask.to(device, non_blocking=True),
                key: x.to(device, non_blocking=True)}

    def subset(self, idx) -> "Examples":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Examples(self.attention_mask[idx], self.labels[idx],
                        None if self.input_ids is None else self.input_ids[idx],
                        None if self.inputs_embeds is None else self.inputs_embeds[idx],
                        self.class_of[idx])

    @classmethod
    def of(cls, split, idx=None) -> "Examples":
        """Real examples of a tokenised split (`utils.data.TokenizedSplit`), all or `idx`."""
        ex = cls(split.attention_mask, split.labels, input_ids=split.input_ids)
        return ex if idx is None else ex.subset(idx)


# -------------------------------------------------------------------------------------- losses

def label_loss(logits: torch.Tensor, labels: torch.Tensor, multilabel: bool,
               reduction: str = "mean") -> torch.Tensor:
    """The loss of predicted `logits` [B, C] against labels.

    labels [B] long: cross-entropy. labels [B, C] in a single-label task: soft cross-entropy
    against the normalised label vector (soft labels). labels [B, C] in a multi-label task: BCE,
    averaged over classes. `reduction` 'mean' averages over examples, 'sum' adds them up.
    Computed in fp32 whatever the logits' dtype (bf16 under autocast).
    """
    logits = at_least_fp32(logits)
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels, reduction=reduction)
    if multilabel:
        per_example = F.binary_cross_entropy_with_logits(
            logits, labels.to(logits.dtype), reduction="none").mean(1)          # [B]
    else:
        target = labels.to(logits.dtype).clamp_min(0)
        target = target / target.sum(1, keepdim=True).clamp_min(1e-12)
        per_example = -(target * F.log_softmax(logits, dim=1)).sum(1)            # [B]
    return per_example.mean() if reduction == "mean" else per_example.sum()


def attention_kl(target: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(target || attn) of attention probabilities, summed over keys, averaged over heads and
    over the unmasked query tokens. Head counts that differ are compared head-averaged.
    target, attn  # [B, heads, L, L] (rows sum to 1); mask  # [B, L] 1 = real token"""
    if target.shape[1] != attn.shape[1]:
        target, attn = target.mean(1, keepdim=True), attn.mean(1, keepdim=True)
    target, attn = at_least_fp32(target), at_least_fp32(attn)  # bf16 under autocast: in fp32
    kl = (target * (target.clamp_min(1e-12).log() - attn.clamp_min(1e-12).log())).sum(-1)  # [B, h, L]
    m = mask.to(kl.dtype)                                                                  # [B, L]
    return (kl.mean(1) * m).sum() / m.sum().clamp_min(1.0)


# A loss function: (model, model inputs, labels, example indices) -> scalar loss. It calls the
# model itself, so it decides what the model returns (logits, hidden states, attention maps).
LossFn = Callable[[torch.nn.Module, dict, torch.Tensor, torch.Tensor], torch.Tensor]


def label_loss_fn(multilabel: bool) -> LossFn:
    """The plain supervised loss: `label_loss` of the model's logits."""
    def loss_fn(model, inputs: dict, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return label_loss(model(**inputs).logits, labels, multilabel)
    return loss_fn


def attention_label_loss_fn(multilabel: bool, targets: torch.Tensor, layers, weight: float) -> LossFn:
    """The label loss plus `weight` x `attention_kl` toward per-example attention labels (the
    model must be built with eager attention).
    targets  # [N, len(layers), heads, L, L] attention probabilities of every example, indexed
    by the batch's example indices; layers: the model layers they label (0 = first, -1 = last)"""
    layers = list(layers)

    def loss_fn(model, inputs: dict, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        out = model(**inputs, output_attentions=True)
        n = inputs["attention_mask"].shape[1]                           # the batch may be trimmed
        target = targets[idx, ..., :n, :n].to(out.logits.device, torch.float32)  # [B, K, h, n, n]
        attn = sum(attention_kl(target[:, k], out.attentions[layer], inputs["attention_mask"])
                   for k, layer in enumerate(layers)) / len(layers)
        return label_loss(out.logits, labels, multilabel) + weight * attn
    return loss_fn


# ------------------------------------------------------------------------------------- batches

def epoch_batches(n: int, batch_size: int, generator: Optional[torch.Generator] = None,
                  shuffle: bool = True) -> Iterator[torch.Tensor]:
    """One pass over range(n) in batches (a seeded shuffle, or in order)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def length_grouped_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                           chunk_batches: int = 50) -> Iterator[torch.Tensor]:
    """One pass over range(n) in batches of similar length  # lengths [n]: a seeded shuffle cut into
    chunks of `chunk_batches` batches, each chunk sorted by length (longest first), then the
    batches in a seeded random order (Hugging Face's LengthGroupedSampler, batch order shuffled)."""
    order = torch.randperm(len(lengths), generator=generator)
    span = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[lengths[chunk].argsort(descending=True, stable=True)]
        batches += list(chunk.split(batch_size))
    for b in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[b]


def endless_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of `batch_size` cycling over seeded shuffles of range(n) (a batch may span
    two shuffles, so every batch is full)."""
    buf: list = []
    while True:
        while len(buf) < batch_size:
            buf.extend(torch.randperm(n, generator=generator).tolist())
        yield torch.tensor(buf[:batch_size], dtype=torch.long)
        buf = buf[batch_size:]


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
                        ) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, int(math.ceil(warmup_ratio * total_steps))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------------- optimiser

def adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW for the classifiers (experts, evaluation classifiers, students): torch's fused kernel
    where it has one for the parameters' device (CPU and CUDA), one pass over all parameters
    instead of a Python loop of small ops per tensor; the same update rule (on the MiniLM
    classifier on one CPU thread the whole training step takes 0.78x the loop's under bf16:
    benchmarks/results/perf/precision_train_fused.json); elsewhere, the default implementation."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):            # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# ------------------------------------------------------------------------------------- trainer

def train_steps(model: torch.nn.Module, examples: Examples, batches: Iterable[torch.Tensor],
                optimizer: torch.optim.Optimizer, device: torch.device, loss_fn: LossFn,
                scheduler=None, clip_norm: Optional[float] = 1.0, total: Optional[int] = None,
                show_progress: bool = False, desc: str = "train",
                on_step: Optional[Callable[[int, float], Optional[dict]]] = None,
                after_backward: Optional[Callable[[], None]] = None,
                track: Optional[str] = None, track_start: int = 0, bf16: bool = False) -> float:
    """One optimiser step per batch of `batches` (indices into `examples`); returns the mean loss
    per example. `after_backward()` runs between the backward pass and gradient clipping (data
    parallelism averages the gradients over ranks there). `on_step(step, loss)` runs after each
    step (1-based) and may return values to show on the progress bar. With `track` (a series
    name, e.g. 'expert_0'), each step's loss and learning rate go to the active experiment
    tracker (utils.tracking) as `<track>/loss` and `<track>/lr` at step `track_start + step`."""
    tracker = tracking.current() if track else None
    model.train()
    loss_sum, count = 0.0, 0
    bar = progress(batches, enabled=show_progress, total=total, desc=desc)
    for step, idx in enumerate(bar, start=1):
        model.train()
        with autocast(device, bf16):
            loss = loss_fn(model, examples.inputs(idx, device), examples.labels[idx].to(device), idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]                  # the rate this step used
        if scheduler is not None:
            scheduler.step()
        value = loss.item()
        if tracker is not None and tracker.enabled:
            tracker.log(track_start + step, {f"{track}/loss": value, f"{track}/lr": lr})
        loss_sum += value * len(idx)
        count += len(idx)
        shown = on_step(step, value) if on_step is not None else None
        bar.set_postfix(loss=f"{value:.4f}", **(shown or {}))
    return loss_sum / max(1, count)


# ---------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict_logits(model, examples: Examples, batch_size: int, device: torch.device,
                   bf16: bool = False) -> torch.Tensor:
    """Logits of every example, in order  # [N, C] (CPU, fp32); batches of similar length; with
    `bf16`, the forward passes run under bfloat16 autocast."""
    model.eval()
    batches = list(by_length(examples.attention_mask, batch_size))
    with autocast(device, bf16):
        out = [model(**examples.inputs(idx, device)).logits.float().cpu() for idx in batches]
    if not out:
        return torch.zeros(0, 0)
    logits = torch.empty(len(examples), out[0].shape[1])
    logits[torch.cat(batches)] = torch.cat(out)
    return logits


def multilabel_predictions(logits: torch.Tensor, at_least_one: bool) -> torch.Tensor:
    """Multi-label decisions  # [N, C] int: every class with a logit above 0; with
    `at_least_one`, a row with none takes its top-scoring class."""
    pred = (logits > 0).int()
    if at_least_one and len(logits):
        rows = (pred.sum(1) == 0).nonzero().squeeze(1)                     # [k]
        pred[rows, logits[rows].argmax(1)] = 1
    return pred


def scores_from_logits(logits: torch.Tensor, labels: torch.Tensor,
                       at_least_one: bool = False) -> dict:
    """accuracy and macro-F1 (single-label); subset accuracy, micro- and macro-F1 (multi-label,
    decided by `multilabel_predictions`)."""
    if labels.dim() == 2:
        pred = multilabel_predictions(logits, at_least_one).numpy()
        true = labels.int().numpy()
        return {"accuracy": float((pred == true).all(axis=1).mean()),
                "micro_f1": float(f1_score(true, pred, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0))}
    pred = logits.argmax(dim=1).numpy()
    true = labels.numpy()
    return {"accuracy": float(np.mean(pred == true)),
            "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0))}


def evaluate_classifier(model, split, batch_size: int, device: torch.device,
                        at_least_one: bool = False, bf16: bool = False) -> dict:
    """Scores of `model` on a tokenised split (or `Examples`); `at_least_one`: see
    `multilabel_predictions` (dataset.at_least_one_label); `bf16`: see `predict_logits`."""
    examples = split if isinstance(split, Examples) else Examples.of(split)
    return scores_from_logits(predict_logits(model, examples, batch_size, device, bf16),
                              examples.labels, at_least_one)
