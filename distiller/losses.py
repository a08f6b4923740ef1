"""Distillation losses, in a registry: one function each, one signature, mixed by the config.

    distill.losses: [{name: logit_kd, weight: 0.5}, {name: label_ce, weight: 0.5},
                     {name: cka_intra, weight: 1.0, layers: [[6, 3]]}]

Every loss is `fn(ctx: KDContext, pairs) -> scalar`, where `pairs` is the spec's teacher -> student
layer map as hidden-state indices (0 = embeddings; empty in the config: the uniform map, student
layer s <-> teacher layer s * L_t / L_s). Register another with `@register_kd_loss("name")`.

- logit_kd          Hinton: T^2 KL(softmax(t/T) || softmax(s/T)) (sigmoid targets, multi-label)
- label_ce          the student's label loss (hard labels, soft labels of a synthetic set, BCE)
- hidden_mse/_cos   token hidden states, masked (a learnt projection when hidden sizes differ)
- attn_mse/_kl      attention maps of mapped layers (eager attention; head-mean if heads differ)
- classifier_match  the student's head weights towards the teacher's (TTM)
- layer_weight_match query / attention-output weights of mapped layers (TTM)
- cka_intra         FSD intra-feature: token-by-token structure within each sample
- cka_local         FSD local inter-feature: sample-by-sample structure within the batch
- cka_global        FSD global inter-feature: the batch against a memory of teacher centroids
- trajectory_kd     logit KD against the teacher's checkpoint at the current trajectory point

CKA is linear CKA on centred Gram matrices with an epsilon (`linear_cka`): invariant to orthogonal
transforms and isotropic scaling, 1 for identical features, defined for different widths.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from utils.model import ClassifierOutput
from utils.training import attention_kl, label_loss

Pairs = List[Tuple[int, int]]


@dataclass
class KDContext:
    """What every loss sees for one batch."""
    student: ClassifierOutput             # logits [B, C]; hidden_states (L_s+1) x [B, L, H_s]; attentions
    teacher: ClassifierOutput             # the same for the teacher (no grad)
    labels: torch.Tensor                  # [B] or [B, C]
    mask: torch.Tensor                    # [B, L]
    temperature: float
    multilabel: bool
    student_model: nn.Module              # the student (HFClassifier), for weight matching
    teacher_model: nn.Module
    projections: nn.ModuleDict            # "t_s" -> Linear(H_s, H_t), learnt
    memory: Optional["CentroidMemory"] = None
    trajectory_logits: Optional[torch.Tensor] = None   # [B, C] teacher checkpoint's logits
    extras: Dict[str, float] = field(default_factory=dict)


KDLoss = Callable[[KDContext, Pairs], torch.Tensor]
KD_LOSSES: Dict[str, KDLoss] = {}
NEEDS_HIDDEN = {"hidden_mse", "hidden_cos", "cka_intra", "cka_local", "cka_global"}
NEEDS_ATTENTION = {"attn_mse", "attn_kl"}
LOGIT_LOSSES = {"logit_kd", "label_ce", "trajectory_kd"}
# losses that use no layer map (the progressive layer-by-layer schedule leaves them on)
PAIRLESS = LOGIT_LOSSES | {"classifier_match"}


def register_kd_loss(name: str, needs_hidden: bool = False, needs_attention: bool = False):
    """Decorator: make a loss usable as {name: <name>} in distill.losses."""
    def wrap(fn: KDLoss) -> KDLoss:
        if name in KD_LOSSES and KD_LOSSES[name] is not fn:
            raise ValueError(f"distillation loss {name!r} is already registered")
        KD_LOSSES[name] = fn
        if needs_hidden:
            NEEDS_HIDDEN.add(name)
        if needs_attention:
            NEEDS_ATTENTION.add(name)
        return fn
    return wrap


# ------------------------------------------------------------------------------------- helpers

def linear_cka(x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor] = None,
               eps: float = 1e-8) -> torch.Tensor:
    """Linear CKA of row-aligned features, batched over leading dims.

    x  # [..., n, d1]   y  # [..., n, d2]   mask  # [..., n] (rows to use; others ignored)
    -> [...]: <K_x, K_y> / (||K_x|| ||K_y||) with K = X_c X_c^T on centred rows.
    """
    x, y = x.double(), y.double()
    if mask is not None:
        m = mask.unsqueeze(-1).double()                                     # [..., n, 1]
        count = m.sum(-2, keepdim=True).clamp_min(1.0)
        x = (x - (x * m).sum(-2, keepdim=True) / count) * m
        y = (y - (y * m).sum(-2, keepdim=True) / count) * m
    else:
        x = x - x.mean(-2, keepdim=True)
        y = y - y.mean(-2, keepdim=True)
    kx = x @ x.transpose(-1, -2)                                            # [..., n, n]
    ky = y @ y.transpose(-1, -2)
    hsic = (kx * ky).sum((-1, -2))
    # clamped before the square root: a constant feature set (norm 0) gives CKA 0 and a zero,
    # not NaN, gradient
    norm = ((kx * kx).sum((-1, -2)).clamp_min(eps * eps).sqrt()
            * (ky * ky).sum((-1, -2)).clamp_min(eps * eps).sqrt())
    return (hsic / (norm + eps)).float()


def _project(ctx: KDContext, t: int, s: int, h_s: torch.Tensor, h_t: torch.Tensor) -> torch.Tensor:
    """The student's features in the teacher's width (identity when equal)."""
    if h_s.shape[-1] == h_t.shape[-1]:
        return h_s
    return ctx.projections[projection_key(t, s)](h_s)


def projection_key(t: int, s: int) -> str:
    return f"t{t}_s{s}"


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of per-token values [B, L] over unmasked tokens."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def _soft_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float,
             multilabel: bool) -> torch.Tensor:
    if multilabel:
        target = torch.sigmoid(teacher_logits / T)
        return T * T * F.binary_cross_entropy_with_logits(student_logits / T, target) - \
            T * T * F.binary_cross_entropy_with_logits(teacher_logits / T, target).detach()
    log_p_s = F.log_softmax(student_logits / T, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / T, dim=-1)
    return T * T * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


def _attention_pair(ctx: KDContext, t: int, s: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attention maps [B, heads, L, L] of teacher hidden index t and student hidden index s
    (the layer producing that hidden state); averaged over heads when head counts differ."""
    if t < 1 or s < 1:
        raise ValueError(f"attention losses map transformer layers (hidden index >= 1), got {t}->{s}")
    a_t, a_s = ctx.teacher.attentions[t - 1], ctx.student.attentions[s - 1]
    if a_t.shape[1] != a_s.shape[1]:
        a_t, a_s = a_t.mean(1, keepdim=True), a_s.mean(1, keepdim=True)
    return a_t, a_s


# -------------------------------------------------------------------------------------- losses

@register_kd_loss("logit_kd")
def logit_kd(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    return _soft_kd(ctx.student.logits, ctx.teacher.logits, ctx.temperature, ctx.multilabel)


@register_kd_loss("label_ce")
def label_ce(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    return label_loss(ctx.student.logits, ctx.labels, ctx.multilabel)


@register_kd_loss("trajectory_kd")
def trajectory_kd(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    if ctx.trajectory_logits is None:
        raise ValueError("trajectory_kd needs the teacher checkpoint's logits")
    return _soft_kd(ctx.student.logits, ctx.trajectory_logits, ctx.temperature, ctx.multilabel)


def _over_pairs(pairs: Pairs, per_pair: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """The mean of a per-layer-pair loss over the layer map."""
    return torch.stack([per_pair(t, s) for t, s in pairs]).mean()


@register_kd_loss("hidden_mse")
def hidden_mse(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    def per_pair(t: int, s: int) -> torch.Tensor:
        h_t, h_s = ctx.teacher.hidden_states[t], ctx.student.hidden_states[s]      # [B, L, H]
        diff = (_project(ctx, t, s, h_s, h_t) - h_t).pow(2).mean(-1)               # [B, L]
        return _masked_mean(diff, ctx.mask)
    return _over_pairs(pairs, per_pair)


@register_kd_loss("hidden_cos")
def hidden_cos(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    def per_pair(t: int, s: int) -> torch.Tensor:
        h_t, h_s = ctx.teacher.hidden_states[t], ctx.student.hidden_states[s]
        cos = F.cosine_similarity(_project(ctx, t, s, h_s, h_t), h_t, dim=-1)       # [B, L]
        return _masked_mean(1.0 - cos, ctx.mask)
    return _over_pairs(pairs, per_pair)


@register_kd_loss("attn_mse")
def attn_mse(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    def per_pair(t: int, s: int) -> torch.Tensor:
        a_t, a_s = _attention_pair(ctx, t, s)                                      # [B, h, L, L]
        per_row = (a_s - a_t).pow(2).mean(-1)                                      # [B, h, L]
        return _masked_mean(per_row.mean(1), ctx.mask)                             # query rows
    return _over_pairs(pairs, per_pair)


@register_kd_loss("attn_kl")
def attn_kl(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    def per_pair(t: int, s: int) -> torch.Tensor:
        a_t, a_s = _attention_pair(ctx, t, s)                                      # [B, h, L, L]
        return attention_kl(a_t, a_s, ctx.mask)
    return _over_pairs(pairs, per_pair)


@register_kd_loss("classifier_match")
def classifier_match(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    s, t = ctx.student_model.classifier, ctx.teacher_model.classifier
    if s.weight.shape != t.weight.shape:
        raise ValueError("classifier_match needs the teacher's hidden size")
    return F.mse_loss(s.weight, t.weight) + F.mse_loss(s.bias, t.bias)


def _layer_modules(model: nn.Module) -> nn.ModuleList:
    return model.layers() if hasattr(model, "layers") else model.encoder.encoder.layer


@register_kd_loss("layer_weight_match")
def layer_weight_match(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    s_layers, t_layers = _layer_modules(ctx.student_model), _layer_modules(ctx.teacher_model)
    losses = []
    for t, s in pairs:
        if t < 1 or s < 1:
            continue
        a, b = s_layers[s - 1].attention, t_layers[t - 1].attention
        if a.self.query.weight.shape != b.self.query.weight.shape:
            raise ValueError("layer_weight_match needs the teacher's hidden size")
        losses.append(F.mse_loss(a.self.query.weight, b.self.query.weight)
                      + F.mse_loss(a.output.dense.weight, b.output.dense.weight))
    return torch.stack(losses).mean()


@register_kd_loss("cka_intra")
def cka_intra(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    """1 - CKA of the token-by-token structure of each sample (padding excluded)."""
    return _over_pairs(pairs, lambda t, s: 1.0 - linear_cka(
        ctx.teacher.hidden_states[t], ctx.student.hidden_states[s], ctx.mask).mean())


@register_kd_loss("cka_local")
def cka_local(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    """1 - CKA of the sample-by-sample structure of the batch ([CLS] of mapped layers)."""
    return _over_pairs(pairs, lambda t, s: 1.0 - linear_cka(
        ctx.teacher.hidden_states[t][:, 0], ctx.student.hidden_states[s][:, 0]))


@register_kd_loss("cka_global")
def cka_global(ctx: KDContext, pairs: Pairs) -> torch.Tensor:
    """1 - CKA of the batch's relations to the memory's centroids ([CLS] of the last layer)."""
    if ctx.memory is None:
        raise ValueError("cka_global needs the centroid memory (built before training)")
    f_t = ctx.teacher.hidden_states[-1][:, 0]                                    # [B, H_t]
    f_s = ctx.student.hidden_states[-1][:, 0]                                    # [B, H_s]
    ctx.memory.update(f_t.detach(), f_s.detach())          # the batch joins the student memory
    r_t = F.normalize(f_t, dim=-1) @ F.normalize(ctx.memory.teacher, dim=-1).T     # [B, K]
    r_s = F.normalize(f_s, dim=-1) @ F.normalize(ctx.memory.student, dim=-1).T     # [B, K]
    return 1.0 - linear_cka(r_t, r_s)


# ------------------------------------------------------------------------------------- memory

class CentroidMemory(nn.Module):
    """FSD's global memory: k-means centroids of the teacher's [CLS] features of the training
    data (`build`, once, before training) and their student counterparts: every batch, each
    sample joins its nearest teacher centroid, and both the teacher centroid and the student
    centroid move to their members' mean (EMA, no gradient)."""

    def __init__(self, teacher_centroids: torch.Tensor, student_dim: int, momentum: float = 0.9):
        super().__init__()
        k = teacher_centroids.shape[0]
        self.register_buffer("teacher", teacher_centroids.float())                 # [K, H_t]
        self.register_buffer("student", torch.zeros(k, student_dim))              # [K, H_s]
        self.register_buffer("seen", torch.zeros(k))
        self.momentum = momentum

    @torch.no_grad()
    def update(self, f_t: torch.Tensor, f_s: torch.Tensor) -> None:
        """Each batch sample joins its nearest teacher centroid; both sides of that centroid move
        towards the members' mean (EMA), the student side starting at its first members' mean."""
        nearest = torch.cdist(f_t.float(), self.teacher).argmin(1)                # [B]
        m = self.momentum
        for k in nearest.unique().tolist():
            members = nearest == k
            self.teacher[k] = m * self.teacher[k] + (1 - m) * f_t[members].float().mean(0)
            mean = f_s[members].float().mean(0)
            self.student[k] = mean if self.seen[k] == 0 else m * self.student[k] + (1 - m) * mean
            self.seen[k] += 1

    @classmethod
    def build(cls, teacher_features: torch.Tensor, k: int, student_dim: int, seed: int
              ) -> "CentroidMemory":
        from sklearn.cluster import KMeans

        k = min(k, len(teacher_features))
        km = KMeans(n_clusters=k, n_init=4, random_state=seed % (2 ** 31)).fit(
            teacher_features.float().numpy())
        return cls(torch.from_numpy(km.cluster_centers_).float(), student_dim)


# ------------------------------------------------------------------------------------ layer map

def uniform_pairs(teacher_layers: int, student_layers: int) -> Pairs:
    """Student layer s (hidden index s = 1..L_s) <-> teacher layer round(s * L_t / L_s)."""
    return [(round(s * teacher_layers / student_layers), s) for s in range(1, student_layers + 1)]


def resolve_pairs(layers: Sequence[Sequence[int]], teacher_layers: int, student_layers: int
                  ) -> Pairs:
    """The spec's layer map with negative indices resolved (hidden-state indices)."""
    if not layers:
        return uniform_pairs(teacher_layers, student_layers)
    out = []
    for t, s in layers:
        t = t + teacher_layers + 1 if t < 0 else t
        s = s + student_layers + 1 if s < 0 else s
        if not (0 <= t <= teacher_layers and 0 <= s <= student_layers):
            raise ValueError(f"layer map {[t, s]} is out of range (teacher 0..{teacher_layers}, "
                             f"student 0..{student_layers})")
        out.append((t, s))
    return out
