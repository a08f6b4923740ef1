"""The terms of the condensation loss, in a registry (`condense.objectives` in the config).

Each term is a class registered by name with `@register_objective("name")`. The condenser builds
the terms of `condense.objectives` ([{name, weight}, ...]; when empty, derived from the `method`
shorthand by `objective_specs`) and runs every iteration as a loop over them:

    for term in joint terms:  term.backward(it, shard)       # weight * gradient into the data
    for term in joint terms:  term.before_step(it)           # e.g. the sampling net's ascent
    optimiser step;  term.after_step() for every joint term   # e.g. syn_lr's own step
    for term with own_steps:  own_steps x (zero_grad; term.backward; optimiser step)

A name that is not a registered objective but a registered distribution metric (`NCFM` package:
'ncfm', 'mmd', or one you add with `NCFM.register_metric`) is feature matching with that metric.
Terms keep their own state (`state_dict`/`load_state_dict`); it is the same on every rank.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Type

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from condenser.expert_pool import ExpertPool, choose_expert
from condenser.synthetic import SyntheticShard
from NCFM import DISTRIBUTION_METRICS, SamplingNet, get_metric, negate_grads, sample_frequencies
from utils.config_schema import Config, ObjectiveSpec
from utils.data import TokenizedSplit
from utils.distributed import DistEnv, all_reduce_sum
from utils.errors import UserError
from utils.precision import resolve_precision
from utils.seeding import derive_seed, seeded_sample
from utils.synset import decode
from utils.training import label_loss

logger = logging.getLogger(__name__)


@dataclass
class ObjectiveContext:
    """What a term may read: the config, the ranks, the experts and the real training split."""
    cfg: Config
    env: DistEnv
    pool: ExpertPool
    train: TokenizedSplit
    classes: List[int]       # every condensed class
    my_classes: List[int]    # the classes this rank owns

    @property
    def multilabel(self) -> bool:
        return self.cfg.dataset.is_multilabel

    @property
    def precision(self) -> str:
        """`condense.precision` with 'auto' resolved for this device (fp32, bf16_real or bf16)."""
        return resolve_precision(self.cfg.condense.precision, self.env.device)

    def decoded(self, shard: SyntheticShard, c: int):
        """Class c's training examples (embeds [M, L, H], mask [M, L], labels [M] or [M, C])."""
        k = self.cfg.condense
        return decode(shard.class_data(c), k.factor, k.decode_type)


class Objective:
    """One term of the condensation loss.

    `backward` accumulates `weight` x the gradient of the term into the synthetic data and returns
    the term's unweighted value: this rank's share (summed over ranks by the condenser) or, for
    a `replicated` term, the global value every rank computed alike.
    """
    metric_key = "loss"     # the key of its value in the iteration record
    replicated = False      # backward returns the global value on every rank
    own_steps = 0           # > 0: optimiser steps of its own after the joint step (calibration)
    own_every = 1           # ... taken on every own_every-th iteration only
    needs_eager_attention = False   # second-order gradients through the expert (no fused kernel)
    trains_labels = False   # its gradient reaches learnt labels (condense.learn_labels)

    def __init__(self, ctx: ObjectiveContext, weight: float):
        self.ctx, self.weight = ctx, weight

    def backward(self, it: int, shard: SyntheticShard) -> float:
        raise NotImplementedError

    def before_step(self, it: int) -> None:
        """After every joint term's backward, before the optimiser step."""

    def after_step(self) -> None:
        """After the optimiser step."""

    def info(self) -> dict:
        """Extra fields of the iteration record (e.g. which expert the term used)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


OBJECTIVES: Dict[str, Type[Objective]] = {}


def register_objective(name: str) -> Callable[[Type[Objective]], Type[Objective]]:
    """Class decorator: make an `Objective` subclass usable as `{name: <name>}` in the config."""
    def wrap(cls: Type[Objective]) -> Type[Objective]:
        if name in OBJECTIVES and OBJECTIVES[name] is not cls:
            raise ValueError(f"objective {name!r} is already registered")
        OBJECTIVES[name] = cls
        return cls
    return wrap


# ----------------------------------------------------------------------------- feature matching

def cls_features(model, layer_index, **inputs) -> torch.Tensor:
    """L2-normalised pooled features of the chosen layers  # [K, B, H] (fp32)"""
    return F.normalize(model(layer_index=layer_index, **inputs).features.float(), dim=-1)


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on the device's type (a no-op context when not enabled)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class RealFeatureCache:
    """`condense.real_cache`: the real features of each sample under each (expert, lam grid
    value), filled the first time a batch needs them. One table per (expert, grid index, class)
    over the class's training pool  # feats [N_c, K, H], filled [N_c]"""

    def __init__(self, class_indices):
        self.class_indices = class_indices
        self.tables: Dict[tuple, tuple] = {}
        self.hits = self.misses = 0

    def get(self, key: tuple, c: int, idx: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]
            ) -> torch.Tensor:
        """Features of training samples `idx` (of class c) under `key`; `compute(missing idx)`
        gives [K, m, H] for those not cached yet  # [K, B, H]"""
        pool = self.class_indices[c]
        pos = torch.searchsorted(pool, idx)                            # pools are sorted
        table = self.tables.get((*key, c))
        missing = pos if table is None else pos[~table[1][pos]]
        missing = torch.unique(missing)
        if len(missing):
            feats = compute(pool[missing])                             # [K, m, H]
            if table is None:
                table = (torch.zeros(feats.shape[0], len(pool), feats.shape[2], dtype=feats.dtype,
                                     device=feats.device), torch.zeros(len(pool), dtype=torch.bool))
                self.tables[(*key, c)] = table
            table[0][:, missing] = feats
            table[1][missing] = True
        self.misses += len(missing)
        self.hits += len(idx) - len(missing)
        return table[0][:, pos]

    def info(self) -> dict:
        total = self.hits + self.misses
        return {"cache_hit_rate": round(self.hits / total, 4) if total else 0.0}


@register_objective("feature_match")
class FeatureMatching(Objective):
    """Distribution matching of real and synthetic [CLS] features (`network.layer_index`) of an
    expert interpolated between its initial and final weights, one class at a time; the metric is
    `condense.dis_metrics` (NCFM by default), or the name the term was configured with."""
    metric_key = "match_loss"

    def __init__(self, ctx: ObjectiveContext, weight: float, metric: Optional[str] = None):
        super().__init__(ctx, weight)
        c = ctx.cfg.condense
        self.metric_name = (metric or c.dis_metrics).upper()
        try:
            self.metric = get_metric(self.metric_name)
        except ValueError as exc:
            raise UserError(f"condense.dis_metrics: {exc}") from None
        self.options = {opt: getattr(c, key) for opt, key in self.metric.config_options.items()}
        self.hidden = ctx.pool.match_model.hidden_size
        n = ctx.pool.match_model.num_layers
        bad = [i for i in ctx.cfg.network.layer_index if not -(n + 1) <= i <= n]
        if bad:
            raise UserError(f"network.layer_index {ctx.cfg.network.layer_index}: {bad} out of range; "
                            f"the model has hidden states 0..{n} (or -{n + 1}..-1; 0 = embeddings)")
        self.sampling_net: Optional[SamplingNet] = None
        self.sampling_opt = None
        if c.sampling_net and self.metric.needs_frequencies:
            torch.manual_seed(derive_seed(ctx.cfg.run.seed, "sampling_net"))  # same on all ranks
            self.sampling_net = SamplingNet(self.hidden, c.num_freqs,
                                            init_scale=c.freq_scale).to(ctx.env.device)
            self.sampling_opt = torch.optim.Adam(self.sampling_net.parameters(),
                                                 lr=ctx.cfg.optimization.sampling_lr)
        self._t = self._t_net = None
        self._choice = None
        self.cache = RealFeatureCache(ctx.train.class_indices) if c.real_cache else None

    def _frequencies(self, it: int):
        c = self.ctx.cfg.condense
        if not self.metric.needs_frequencies:
            return None, None
        gen = torch.Generator().manual_seed(derive_seed(self.ctx.cfg.run.seed, "freq", it))
        if self.sampling_net is not None:
            t_net = self.sampling_net(gen)                               # [F, H], graph to the net
            return t_net.detach().requires_grad_(True), t_net
        return sample_frequencies(c.num_freqs, self.hidden, c.freq_scale, gen,
                                  device=self.ctx.env.device), None

    def _real_batch(self, it: int, c: int) -> torch.Tensor:
        seed = derive_seed(self.ctx.cfg.run.seed, "real", it, c)
        return seeded_sample(self.ctx.train.class_indices[c], self.ctx.cfg.dataset.batch_real, seed)

    def _match(self, it: int, shard: SyntheticShard, t, backward: bool) -> float:
        cfg, dev, k = self.ctx.cfg, self.ctx.env.device, self.ctx.cfg.condense
        self._choice = choose_expert(cfg.run.seed, it, self.ctx.pool.num, k.interp_range,
                                     k.lam_grid)
        model = self.ctx.pool.load_interval(self._choice)
        layers, total = cfg.network.layer_index, 0.0

        @torch.no_grad()
        def real_features(idx: torch.Tensor) -> torch.Tensor:            # [K, B, H]
            with record_function("ncfm.real_features"), autocast(dev, self.ctx.precision != "fp32"):
                ids, mask = self.ctx.train.input_ids[idx], self.ctx.train.attention_mask[idx]
                if dev.type == "cuda":                    # page-locked: the copy overlaps
                    ids, mask = ids.pin_memory(), mask.pin_memory()
                return cls_features(model, layers, input_ids=ids.to(dev, non_blocking=True),
                                    attention_mask=mask.to(dev, non_blocking=True))

        for c in self.ctx.my_classes:
            idx = self._real_batch(it, c)
            if self.cache is not None:
                key = (self._choice.expert, self._choice.grid_index)
                feat_real = self.cache.get(key, c, idx, real_features)
            else:
                feat_real = real_features(idx)
            with record_function("ncfm.synthetic_forward"), torch.set_grad_enabled(backward):
                embeds, mask, _ = self.ctx.decoded(shard, c)
                with autocast(dev, self.ctx.precision == "bf16"):
                    feat_syn = cls_features(model, layers, inputs_embeds=embeds,  # [K, M, H]
                                            attention_mask=mask)
                per_layer = [self._metric(fr, fs, t) for fr, fs in zip(feat_real, feat_syn)]
                loss = k.loss_scale * torch.stack(per_layer).sum()
            if backward:
                with record_function("ncfm.synthetic_backward"):
                    (self.weight * loss).backward()
            total += loss.item()
        return total

    def _metric(self, feat_real, feat_syn, t):
        if self.metric.needs_frequencies:
            return self.metric.fn(feat_real, feat_syn, t, **self.options)
        return self.metric.fn(feat_real, feat_syn, **self.options)

    def backward(self, it: int, shard: SyntheticShard) -> float:
        self._t, self._t_net = self._frequencies(it)
        return self._match(it, shard, self._t, backward=True)

    @torch.no_grad()
    def loss_at(self, it: int, shard: SyntheticShard) -> float:
        """The loss iteration `it` would see (same expert, frequencies, real batches), summed over
        ranks, without changing anything (tests and diagnostics)."""
        t, _ = self._frequencies(it)
        local = self._match(it, shard, t, backward=False)
        return all_reduce_sum(torch.tensor([local], dtype=torch.float64,
                                           device=self.ctx.env.device)).item()

    def before_step(self, it: int) -> None:
        """The sampling net's ascent step: t's gradient summed over ranks, sign flipped."""
        if self._t_net is None or it % self.ctx.cfg.optimization.sampling_step_every:
            return
        t = self._t
        grad = t.grad if t.grad is not None else torch.zeros_like(t)
        all_reduce_sum(grad)                                         # one net for all ranks
        self.sampling_opt.zero_grad(set_to_none=True)
        self._t_net.backward(grad)
        negate_grads(self.sampling_net)                              # ascent: maximise the loss
        self.sampling_opt.step()

    def info(self) -> dict:
        out = {"expert": self._choice.expert, "lam": round(self._choice.lam, 4)}
        return {**out, **self.cache.info()} if self.cache is not None else out

    def state_dict(self) -> dict:
        if self.sampling_net is None:
            return {}
        return {"sampling_net": self.sampling_net.state_dict(),
                "sampling_opt": self.sampling_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.sampling_net is not None and state:
            self.sampling_net.load_state_dict(state["sampling_net"])
            self.sampling_opt.load_state_dict(state["sampling_opt"])


# ---------------------------------------------------------------------------------- calibration

@register_objective("calibration")
class Calibration(Objective):
    """`condense.iter_calib` optimiser steps of their own after the joint step: the label loss of
    the iteration's expert (final weights) on the synthetic data (CE; BCE for multi-label; soft CE
    for soft labels). The recorded value is weighted, averaged over its steps."""
    metric_key = "calib_loss"

    def __init__(self, ctx: ObjectiveContext, weight: float):
        super().__init__(ctx, weight)
        self.own_steps = ctx.cfg.condense.iter_calib
        self.own_every = ctx.cfg.condense.calib_every
        self._expert = None

    def backward(self, it: int, shard: SyntheticShard) -> float:
        cfg = self.ctx.cfg
        self._expert = choose_expert(cfg.run.seed, it, self.ctx.pool.num,      # same expert as
                                     cfg.condense.interp_range).expert        # feature matching
        final = self.ctx.pool.load_final(self._expert)
        total = 0.0
        for c in self.ctx.my_classes:
            embeds, mask, labels = self.ctx.decoded(shard, c)
            with autocast(self.ctx.env.device, self.ctx.precision == "bf16"):
                logits = final(inputs_embeds=embeds, attention_mask=mask).logits.float()
            # the data moves toward its labels; learnt labels are not pulled toward the expert
            loss = self.weight * label_loss(logits, labels.detach(), self.ctx.multilabel)
            loss.backward()
            total += loss.item() / max(1, self.own_steps)
        return total

    def info(self) -> dict:
        return {"calib_expert": self._expert}


# ------------------------------------------------------------------------------------ building

METHOD_DOC = ("ncfm: [ncfm, calibration]; trajectory: [trajectory, calibration]; combined: "
              "[ncfm, trajectory (weight trajectory_weight), calibration]; calibration has weight "
              "calib_weight and is left out when iter_calib is 0")


def objective_specs(cfg: Config) -> List[ObjectiveSpec]:
    """`condense.objectives`, or the terms the `method` shorthand stands for."""
    c = cfg.condense
    if c.objectives:
        return list(c.objectives)
    specs = []
    if c.method in ("ncfm", "combined"):
        specs.append(ObjectiveSpec("feature_match", 1.0))
    if c.method in ("trajectory", "combined"):
        specs.append(ObjectiveSpec("trajectory", c.trajectory_weight if c.method == "combined" else 1.0))
    if c.iter_calib > 0:
        specs.append(ObjectiveSpec("calibration", c.calib_weight))
    return specs


def build_objectives(ctx: ObjectiveContext, specs: List[ObjectiveSpec]) -> List[Objective]:
    import condenser.trajectory  # noqa: F401  (registers 'trajectory')

    terms = []
    if any(getattr(OBJECTIVES.get(s.name), "needs_eager_attention", False) for s in specs):
        ctx.pool.use_eager_attention()
    for spec in specs:
        if spec.name in OBJECTIVES:
            terms.append(OBJECTIVES[spec.name](ctx, spec.weight))
        elif spec.name.upper() in DISTRIBUTION_METRICS:
            terms.append(FeatureMatching(ctx, spec.weight, metric=spec.name))
        else:
            raise UserError(f"condense.objectives: unknown objective {spec.name!r}; registered "
                            f"objectives: {', '.join(sorted(OBJECTIVES))}; distribution metrics "
                            f"(feature matching): {', '.join(m.lower() for m in DISTRIBUTION_METRICS)}")
    keys = [t.metric_key for t in terms]
    if len(set(keys)) != len(keys):
        raise UserError(f"condense.objectives: two terms report the same value ({keys}); "
                        f"each objective may appear once")
    return terms
