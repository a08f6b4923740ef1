"""Distillation losses, in one registry: one function each, one signature, mixed by the config.

    distill:
      losses:
        - {name: logit_kd, weight: 0.5, options: {temperature: 2.0}}
        - {name: label_ce, weight: 0.5}
        - {name: cka_intra, weight: 1.0, options: {layers: [[6, 3]]}}

Every loss is `fn(ctx: KDContext, pairs, opts) -> scalar`: `opts` is its options dataclass (filled
from the spec's `options`, validated at config load), `pairs` the resolved teacher -> student layer
map for a loss that `uses_layer_map` (its `layers` option as hidden-state indices, 0 = embeddings;
empty: the uniform map, student layer s <-> teacher layer s * L_t / L_s), else []. What a loss needs
is declared as traits at registration (`KD_TRAITS`), so the trainer never tests a loss's name:

    @register_kd_loss("logit_mse", options=ScaleOptions, needs_teacher_logits=True,
                      is_logit_loss=True)
    def logit_mse(ctx, pairs, opts):
        return opts.scale * F.mse_loss(ctx.student.logits, ctx.teacher.logits)

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
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from distiller.cka import CentroidMemory, linear_cka
from utils.errors import UserError
from utils.model import ClassifierOutput
from utils.registry import Entry, Registry, opt
from utils.training import attention_kl, label_loss

Pairs = List[Tuple[int, int]]


@dataclass
class KDContext:
    """What every loss sees for one batch (the student's side is filled in by the forward)."""
    student: Optional[ClassifierOutput]   # logits [B, C]; hidden_states (L_s+1) x [B, L, H_s]; attentions
    teacher: ClassifierOutput             # the same for the teacher (no grad); logits may be None
    labels: torch.Tensor                  # [B] or [B, C]
    mask: torch.Tensor                    # [B, L]
    multilabel: bool
    student_model: Optional[nn.Module]    # the student (HFClassifier), for weight matching
    teacher_model: nn.Module
    projections: Optional[nn.ModuleDict]  # "t{t}_s{s}" -> Linear(H_s, H_t), learnt
    memory: Optional[CentroidMemory] = None
    trajectory_logits: Optional[torch.Tensor] = None   # [B, C] teacher checkpoint's logits
    # this rank's rows -> the global batch's (data parallelism; identity in one process)
    gather: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)


KDLoss = Callable[[KDContext, Pairs, Any], torch.Tensor]
KD_LOSSES: Registry[KDLoss] = Registry("distillation loss", publish=True)

# What a loss may declare at registration (all default False); the trainer reads only these.
KD_TRAITS = {
    "needs_hidden": "the student's and teacher's hidden states (the teacher runs on every batch)",
    "needs_attention": "attention maps (eager attention for both models)",
    "needs_teacher_logits": "the teacher's logits (cached once when nothing else needs it)",
    "uses_layer_map": "its options have `layers`; the layer-by-layer schedule switches it",
    "is_logit_loss": "exempt from distill.feature_warmup's ramp",
    "projects_hidden": "learnt projections of student to teacher width for its layer pairs",
    "needs_memory": "FSD's centroid memory (its options have `num_centroid`)",
    "needs_trajectory": "the teacher's epoch checkpoints (its options have `trajectory_points`)",
    "aligns_tokens": "compares teacher and student token by token (one tokenizer for both)",
    "matches_weights": "pulls the student's weights toward the teacher's (a student cut from it)",
}
# options each trait requires of the loss's options dataclass
_TRAIT_OPTIONS = {"uses_layer_map": "layers", "needs_memory": "num_centroid",
                  "needs_trajectory": "trajectory_points"}


# ------------------------------------------------------------------------------------- options

@dataclass
class LayerMapOptions:
    layers: List[List[int]] = opt([], "Teacher -> student layer map, [[teacher, student], ...] as "
                                  "hidden-state indices (0 = embeddings, -1 = last). Empty: student "
                                  "layer s <-> teacher layer round(s * L_t / L_s).")

    def check(self):
        if any(len(pair) != 2 for pair in self.layers):
            yield "layers", "must be [[teacher, student], ...] pairs"


@dataclass
class TemperatureOptions:
    temperature: float = opt(2.0, "Softmax temperature (the loss is scaled by T^2).")

    def check(self):
        if self.temperature <= 0:
            yield "temperature", "must be > 0"


@dataclass
class CKAGlobalOptions:
    num_centroid: int = opt(16, "k-means centroids of the teacher's [CLS] features (the memory, "
                            "built once before training).")

    def check(self):
        if self.num_centroid < 1:
            yield "num_centroid", "must be >= 1"


@dataclass
class TrajectoryKDOptions(TemperatureOptions):
    trajectory_points: List[int] = opt([], "Teacher epochs the student is pulled toward in turn "
                                       "over training (empty: every saved epoch).")

    def check(self):
        yield from super().check()
        if any(p < 0 for p in self.trajectory_points):
            yield "trajectory_points", "must be epochs >= 0"


def register_kd_loss(name: str, options: Optional[type] = None, **traits: bool):
    """Decorator: make `fn(ctx, pairs, opts)` usable as {name: <name>, options: {...}} in
    distill.losses, with its options dataclass and its traits (see KD_TRAITS)."""
    unknown = set(traits) - set(KD_TRAITS)
    if unknown:
        raise TypeError(f"distillation loss {name!r}: unknown traits {sorted(unknown)} "
                        f"(known: {', '.join(KD_TRAITS)})")
    if options is None and traits.get("uses_layer_map"):
        options = LayerMapOptions
    have = {f.name for f in fields(options)} if options is not None else set()
    for trait, key in _TRAIT_OPTIONS.items():
        if traits.get(trait) and key not in have:
            raise TypeError(f"distillation loss {name!r}: trait {trait} needs a {key!r} option")
    return KD_LOSSES.register(name, options=options, **{k: bool(traits.get(k)) for k in KD_TRAITS})


# ------------------------------------------------------------------------------------- helpers

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


def _over_pairs(pairs: Pairs, per_pair: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """The mean of a per-layer-pair loss over the layer map."""
    return torch.stack([per_pair(t, s) for t, s in pairs]).mean()


def _layer_modules(model: nn.Module) -> nn.ModuleList:
    return model.layers() if hasattr(model, "layers") else model.encoder.encoder.layer


# -------------------------------------------------------------------------------------- losses

@register_kd_loss("logit_kd", options=TemperatureOptions, needs_teacher_logits=True,
                  is_logit_loss=True)
def logit_kd(ctx: KDContext, pairs: Pairs, opts: TemperatureOptions) -> torch.Tensor:
    """Hinton KD: T^2 KL(softmax(t/T) || softmax(s/T)) (sigmoid targets when multi-label)."""
    return _soft_kd(ctx.student.logits, ctx.teacher.logits, opts.temperature, ctx.multilabel)


@register_kd_loss("label_ce", is_logit_loss=True)
def label_ce(ctx: KDContext, pairs: Pairs, opts) -> torch.Tensor:
    """The student's label loss (hard labels, a synthetic set's soft labels, BCE multi-label)."""
    return label_loss(ctx.student.logits, ctx.labels, ctx.multilabel)


@register_kd_loss("trajectory_kd", options=TrajectoryKDOptions, needs_trajectory=True,
                  is_logit_loss=True)
def trajectory_kd(ctx: KDContext, pairs: Pairs, opts: TrajectoryKDOptions) -> torch.Tensor:
    """Logit KD against the teacher's checkpoint at the current trajectory point (TTM)."""
    if ctx.trajectory_logits is None:
        raise ValueError("trajectory_kd needs the teacher checkpoint's logits")
    return _soft_kd(ctx.student.logits, ctx.trajectory_logits, opts.temperature, ctx.multilabel)


@register_kd_loss("hidden_mse", needs_hidden=True, uses_layer_map=True, projects_hidden=True,
                  aligns_tokens=True)
def hidden_mse(ctx: KDContext, pairs: Pairs, opts) -> torch.Tensor:
    """MSE of mapped token hidden states, padding excluded (learnt projection across widths)."""
    def per_pair(t: int, s: int) -> torch.Tensor:
        h_t, h_s = ctx.teacher.hidden_states[t], ctx.student.hidden_states[s]      # [B, L, H]
        diff = (_project(ctx, t, s, h_s, h_t) - h_t).pow(2).mean(-1)               # [B, L]
        return _masked_mean(diff, ctx.mask)
    return _over_pairs(pairs, per_pair)


@register_kd_loss("hidden_cos", needs_hidden=True, uses_layer_map=True, projects_hidden=True,
                  aligns_tokens=True)
def hidden_cos(ctx: KDContext, pairs: Pairs, opts) -> torch.Tensor:
    """1 - cosine of mapped token hidden states, padding excluded."""
    def per_pair(t: int, s: int) -> torch.Tensor:
        h_t, h_s = ctx.teacher.hidden_states[t], ctx.student.hidden_states[s]
        cos = F.cosine_similarity(_project(ctx, t, s, h_s, h_t), h_t, dim=-1)       # [B, L]
        return _masked_mean(1.0 - cos, ctx.mask)
    return _over_pairs(pairs, per_pair)


@register_kd_loss("attn_mse", needs_attention=True, uses_layer_map=True, aligns_tokens=True)
def attn_mse(ctx: KDContext, pairs: Pairs, opts) -> torch.Tensor:
    """MSE of the attention maps of mapped layers (head mean when head counts differ)."""
    def per_pair(t: int, s: int) -> torch.Tensor:
        a_t, a_s = _attention_pair(ctx, t, s)                                      # [B, h, L, L]
        per_row = (a_s - a_t).pow(2).mean(-1)                                      # [B, h, L]
        return _masked_mean(per_row.mean(1), ctx.mask)                             # query rows
    return _over_pairs(pairs, per_pair)


@register_kd_loss("attn_kl", needs_attention=True, uses_layer_map=True, aligns_tokens=True)
def attn_kl(ctx: KDContext, pairs: Pairs, opts) -> torch.Tensor:
    """KL of the attention maps of mapped layers (TinyBERT / MiniLM style)."""
    def per_pair(t: int, s: int) -> torch.Tensor:
        a_t, a_s = _attention_pair(ctx, t, s)                                      # [B, h, L, L]
        return attention_kl(a_t, a_s, ctx.mask)
    return _over_pairs(pairs, per_pair)


@register_kd_loss("classifier_match", matches_weights=True)
def classifier_match(ctx: KDContext, pairs: Pairs, opts) -> torch.Tensor:
    """MSE of the student's head weights to the teacher's (TTM)."""
    s, t = ctx.student_model.classifier, ctx.teacher_model.classifier
    if s.weight.shape != t.weight.shape:
        raise ValueError("classifier_match needs the teacher's hidden size")
    return F.mse_loss(s.weight, t.weight) + F.mse_loss(s.bias, t.bias)


@register_kd_loss("layer_weight_match", uses_layer_map=True, matches_weights=True)
def layer_weight_match(ctx: KDContext, pairs: Pairs, opts) -> torch.Tensor:
    """MSE of query and attention-output weights of mapped layers to the teacher's (TTM)."""
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


@register_kd_loss("cka_intra", needs_hidden=True, uses_layer_map=True, aligns_tokens=True)
def cka_intra(ctx: KDContext, pairs: Pairs, opts) -> torch.Tensor:
    """1 - CKA of the token-by-token structure of each sample (padding excluded)."""
    return _over_pairs(pairs, lambda t, s: 1.0 - linear_cka(
        ctx.teacher.hidden_states[t], ctx.student.hidden_states[s], ctx.mask).mean())


@register_kd_loss("cka_local", needs_hidden=True, uses_layer_map=True)
def cka_local(ctx: KDContext, pairs: Pairs, opts) -> torch.Tensor:
    """1 - CKA of the sample-by-sample structure of the batch ([CLS] of mapped layers)."""
    return _over_pairs(pairs, lambda t, s: 1.0 - linear_cka(
        ctx.teacher.hidden_states[t][:, 0], ctx.student.hidden_states[s][:, 0]))


@register_kd_loss("cka_global", options=CKAGlobalOptions, needs_hidden=True, needs_memory=True)
def cka_global(ctx: KDContext, pairs: Pairs, opts: CKAGlobalOptions) -> torch.Tensor:
    """1 - CKA of the batch's relations to the memory's centroids ([CLS] of the last layer)."""
    if ctx.memory is None:
        raise ValueError("cka_global needs the centroid memory (built before training)")
    f_t = ctx.teacher.hidden_states[-1][:, 0]                                    # [B, H_t]
    f_s = ctx.student.hidden_states[-1][:, 0]                                    # [B, H_s]
    # the global batch joins the memory (the same update on every rank)
    ctx.memory.update(ctx.gather(f_t.detach()), ctx.gather(f_s.detach()))
    r_t = F.normalize(f_t, dim=-1) @ F.normalize(ctx.memory.teacher, dim=-1).T     # [B, K]
    r_s = F.normalize(f_s, dim=-1) @ F.normalize(ctx.memory.student, dim=-1).T     # [B, K]
    return 1.0 - linear_cka(r_t, r_s)


# ------------------------------------------------------------------------ specs -> loss terms

@dataclass
class Term:
    """One entry of distill.losses, resolved: the loss, its options and its layer map."""
    label: str                 # the name in the history (name, or name[i] when repeated)
    weight: float
    entry: Entry
    options: Any
    pairs: Pairs

    def trait(self, key: str) -> bool:
        return bool(self.entry.trait(key))

    def __call__(self, ctx: KDContext, pairs: Pairs) -> torch.Tensor:
        return self.entry.obj(ctx, pairs, self.options)


def loss_entries(specs: Sequence) -> List[Tuple[Entry, Any]]:
    """(registry entry, validated options) of each spec; errors name distill.losses[i]."""
    return [(KD_LOSSES.entry(s.name, f"distill.losses[{i}]"),
             KD_LOSSES.options(s.name, s.options, f"distill.losses[{i}].options"))
            for i, s in enumerate(specs)]


def any_trait(specs: Sequence, trait: str) -> bool:
    return any(e.trait(trait) for e, _ in loss_entries(specs))


def build_terms(specs: Sequence, teacher_layers: int, student_layers: int) -> List[Term]:
    names = [s.name.lower() for s in specs]
    terms = []
    for i, (spec, (entry, opts)) in enumerate(zip(specs, loss_entries(specs))):
        pairs: Pairs = []
        if entry.trait("uses_layer_map"):
            try:
                pairs = resolve_pairs(opts.layers, teacher_layers, student_layers)
            except ValueError as exc:
                raise UserError(f"distill.losses[{i}].options.layers: {exc}") from None
        label = entry.name if names.count(names[i]) == 1 else f"{entry.name}[{i}]"
        terms.append(Term(label, spec.weight, entry, opts, pairs))
    return terms


def shared_option(specs: Sequence, trait: str, key: str) -> Any:
    """The option `key` of the losses with `trait` (one resource serves them all: the memory, the
    trajectory); None when no loss has the trait; refused when they disagree."""
    values = {repr(getattr(o, key)): getattr(o, key) for e, o in loss_entries(specs) if e.trait(trait)}
    if len(values) > 1:
        raise UserError(f"distill.losses: the losses with {trait} share one {key}; got "
                        f"{', '.join(values)}")
    return next(iter(values.values()), None)


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
