"""Textual trajectory matching (MTT applied to BERT), with subset matching and bounded memory:
the parameter subsets and the unrolls (the objective that uses them:
`condenser.objectives.trajectory`).

A student starts from expert k's weights at epoch s, takes `syn_steps` gradient steps on the
synthetic set with a learnable learning rate `syn_lr`, and the synthetic data is optimised so that
the student lands near the expert's weights at epoch s + expert_epochs:

    loss = ||theta_N - theta_target||^2 / ||theta_start - theta_target||^2   (matched subset only)

Parameters are handled functionally (`torch.func.functional_call`), so the unrolled steps are
differentiable w.r.t. `inputs_embeds` and `syn_lr`.

Ranks: every rank unrolls the same student on its own classes' synthetic sequences; the student's
gradient at each step is the all-reduced sum over ranks (a differentiable all-reduce), so the
update equals the single-process update on the whole set, for any world size.

Memory (`unroll`):
- 'full': exact gradient through all steps (create_graph); memory grows with syn_steps.
- 'tesla': constant memory in syn_steps (TESLA-style, Cui et al. 2023): a first pass runs the
  unroll without a graph to get theta_N; a second pass replays it one step at a time and
  back-propagates each step's gradient with the now-known dL/dtheta_N. It drops the second-order
  terms through earlier steps (d theta_i / d X), exactly as TESLA does; for syn_steps = 1 it is exact.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch.func import functional_call

from utils.training import label_loss

SUBSET_STRATEGIES = ("all", "top_k", "classifier", "random", "importance_grad", "importance_act")


# ---------------------------------------------------------------------------------- subsets

def _layer_of(name: str) -> Optional[int]:
    """Transformer layer index of a parameter name (encoder.encoder.layer.<i>.…), else None."""
    parts = name.split(".")
    if "layer" in parts:
        i = parts.index("layer")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def select_subset(names: Sequence[str], strategy: str, ratio: float, num_layers: int,
                  seed: int = 0, scores: Optional[Dict[str, float]] = None) -> List[str]:
    """Parameter names to match.

    all: every parameter. classifier: the head only. top_k: the head plus the top
    ceil(ratio * num_layers) transformer layers. random: a seeded random `ratio` of the parameter
    tensors (the head always included). importance_grad / importance_act: the `ratio` of tensors
    with the highest `scores` (the head always included).
    """
    names = list(names)
    head = [n for n in names if n.startswith("classifier.")]
    if strategy == "all":
        return names
    if strategy == "classifier":
        return head
    if strategy == "top_k":
        k = max(1, round(ratio * num_layers))
        top = set(range(num_layers - k, num_layers))
        return [n for n in names if _layer_of(n) in top] + head
    body = [n for n in names if n not in head]
    count = max(1, round(ratio * len(body)))
    if strategy == "random":
        picked = set(random.Random(seed).sample(body, count))
    elif strategy in ("importance_grad", "importance_act"):
        if scores is None:
            raise ValueError(f"subset strategy {strategy!r} needs importance scores")
        picked = set(sorted(body, key=lambda n: -scores.get(n, 0.0))[:count])
    else:
        raise ValueError(f"unknown subset_strategy {strategy!r} (allowed: {', '.join(SUBSET_STRATEGIES)})")
    return [n for n in body if n in picked] + head


def gradient_importance(model, params: Dict[str, torch.Tensor], input_ids, mask, labels
                        ) -> Dict[str, float]:
    """Per-tensor mean |grad| of the classification loss on a real batch."""
    p = {n: t.detach().requires_grad_(True) for n, t in params.items()}
    logits = functional_call(model, p, kwargs={"input_ids": input_ids, "attention_mask": mask}).logits
    loss = label_loss(logits, labels, multilabel=labels.dim() == 2)      # real labels: 2-D = sets
    grads = torch.autograd.grad(loss, list(p.values()), allow_unused=True)
    return {n: (g.abs().mean().item() if g is not None else 0.0) for n, g in zip(p, grads)}


@torch.no_grad()
def activation_importance(model, params: Dict[str, torch.Tensor], input_ids, mask
                          ) -> Dict[str, float]:
    """Per-tensor score = mean |hidden state| leaving the tensor's layer (head: the logits)."""
    out = functional_call(model, params, kwargs={"input_ids": input_ids, "attention_mask": mask,
                                                 "output_hidden_states": True})
    per_layer = [h.abs().mean().item() for h in out.hidden_states[1:]]
    head = out.logits.abs().mean().item()
    scores = {}
    for n in params:
        layer = _layer_of(n)
        scores[n] = head if n.startswith("classifier.") else (per_layer[layer] if layer is not None
                                                              else per_layer[0])
    return scores


# ----------------------------------------------------------------------------------- unroll

@dataclass
class SyntheticBatch:
    """This rank's decoded synthetic examples (all owned classes)."""
    embeds: torch.Tensor   # [M, L, H] (a function of `leaves`)
    mask: torch.Tensor     # [M, L]
    labels: torch.Tensor   # [M] or [M, C]
    leaves: List[torch.Tensor]  # the learnable tensors `embeds` is computed from
    multilabel: bool = False    # [M, C] labels are label sets (BCE), not soft labels


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks: every rank's loss depends on every
    rank's input, so d(sum_r L_r)/dx_k = sum_r dL_r/d(sum) (torch.distributed.nn's all_reduce, which
    torch 2.13 deprecates, did the same)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)                  # differentiable, like the forward


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """Differentiable all-reduce (sum); identity without a process group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _AllReduceSum.apply(t)
    return t


def _student_grads(model, fixed: Dict[str, torch.Tensor], learn: Dict[str, torch.Tensor],
                   batch: SyntheticBatch, total_examples: int, create_graph: bool
                   ) -> List[torch.Tensor]:
    """Gradient of the mean loss over the WHOLE synthetic set (all ranks) w.r.t. `learn`."""
    logits = functional_call(model, {**fixed, **learn},
                             kwargs={"inputs_embeds": batch.embeds, "attention_mask": batch.mask}).logits
    loss = label_loss(logits, batch.labels, batch.multilabel, reduction="sum")
    loss = loss / total_examples                                       # this rank's share of the mean
    params = list(learn.values())
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return [_sum_over_ranks(g) for g in grads]


def trajectory_distance(final: Dict[str, torch.Tensor], start: Dict[str, torch.Tensor],
                        target: Dict[str, torch.Tensor]) -> torch.Tensor:
    """||final - target||^2 / ||start - target||^2 over the matched tensors."""
    num = sum(((final[n] - target[n]) ** 2).sum() for n in final)
    den = sum(((start[n] - target[n]) ** 2).sum() for n in final)
    return num / den.clamp_min(1e-12)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def student_endpoint(model, fixed, start, batch: SyntheticBatch, syn_lr: torch.Tensor,
                     syn_steps: int, total_examples: int, create_graph: bool = True
                     ) -> Dict[str, torch.Tensor]:
    """theta_N after `syn_steps` SGD steps on the synthetic set, from `start` (the matched
    subset); `fixed` parameters are used as they are and never change."""
    theta = {n: t.detach() for n, t in start.items()}
    for _ in range(syn_steps):
        p = {n: t if t.requires_grad else t.clone().requires_grad_(True) for n, t in theta.items()}
        grads = _student_grads(model, fixed, p, batch, total_examples, create_graph=create_graph)
        theta = {n: p[n] - syn_lr * g for n, g in zip(p, grads)}
        if not create_graph:
            theta = {n: t.detach() for n, t in theta.items()}
    return theta


def unroll_full(model, fixed, start, target, batch: SyntheticBatch, syn_lr: torch.Tensor,
                syn_steps: int, total_examples: int) -> torch.Tensor:
    """Exact: the distance as a differentiable function of the synthetic data and syn_lr."""
    theta = student_endpoint(model, fixed, start, batch, syn_lr, syn_steps, total_examples)
    return trajectory_distance(theta, start, target)


def backward_full(model, fixed, start, target, batch: SyntheticBatch, syn_lr: torch.Tensor,
                  syn_steps: int, total_examples: int, weight: float = 1.0) -> torch.Tensor:
    """Accumulate exact gradients into batch.embeds and syn_lr; returns the distance (0-dim,
    detached: no host sync).

    Every rank holds the same distance; each back-propagates 1/W of it, so the all-reduce's
    backward sums to the exact gradient of the one global objective for its own embeddings, and
    the replicated syn_lr's gradient is the sum over ranks."""
    distance = unroll_full(model, fixed, start, target, batch, syn_lr, syn_steps, total_examples)
    (weight * distance / _world_size()).backward()
    if _world_size() > 1 and syn_lr.grad is not None:
        dist.all_reduce(syn_lr.grad)
    return distance.detach()


def backward_tesla(model, fixed, start, target, batch: SyntheticBatch, syn_lr: torch.Tensor,
                   syn_steps: int, total_examples: int, weight: float = 1.0) -> torch.Tensor:
    """Constant memory in syn_steps (first-order, TESLA-style); accumulates gradients into
    batch.embeds and syn_lr and returns the distance (0-dim, detached)."""
    names = list(start)
    lr = syn_lr.detach()
    frozen = SyntheticBatch(batch.embeds.detach(), batch.mask, batch.labels.detach(), [],
                            batch.multilabel)
    # pass 1: theta_N, no graph kept between steps
    theta = {n: t.detach() for n, t in start.items()}
    for _ in range(syn_steps):
        p = {n: theta[n].clone().requires_grad_(True) for n in names}
        grads = _student_grads(model, fixed, p, frozen, total_examples, create_graph=False)
        theta = {n: (p[n] - lr * g).detach() for n, g in zip(names, grads)}
    den = sum(((start[n] - target[n]) ** 2).sum() for n in names).clamp_min(1e-12)
    distance = sum(((theta[n] - target[n]) ** 2).sum() for n in names) / den
    # theta_N = theta_0 - lr * sum_i g_i, so dL/dg_i = -lr * v and dL/dlr = -sum_i v . g_i
    v = {n: 2 * (theta[n] - target[n]) / den for n in names}
    # pass 2: replay one step at a time, back-propagating v through that step only
    theta = {n: t.detach() for n, t in start.items()}
    lr_grad = torch.zeros((), dtype=syn_lr.dtype, device=syn_lr.device)
    for _ in range(syn_steps):
        p = {n: theta[n].clone().requires_grad_(True) for n in names}
        grads = _student_grads(model, fixed, p, batch, total_examples, create_graph=True)
        dot = sum((v[n] * g).sum() for n, g in zip(names, grads))
        # retain_graph: learnt labels (a softmax computed once) are shared by every replayed
        # step; each step's own graph is freed when `dot` is replaced
        (-weight * lr * dot / _world_size()).backward(inputs=batch.leaves, retain_graph=True)
        lr_grad = lr_grad - weight * dot.detach()                       # global g: no reduce needed
        theta = {n: (p[n] - lr * g).detach() for n, g in zip(names, grads)}
    syn_lr.grad = lr_grad if syn_lr.grad is None else syn_lr.grad + lr_grad
    return distance.detach()


UNROLLS: Dict[str, Callable[..., torch.Tensor]] = {"full": backward_full, "tesla": backward_tesla}
