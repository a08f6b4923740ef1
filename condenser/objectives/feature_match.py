"""Feature matching: real and synthetic pooled features of an interpolated expert compared by a
registered distribution metric (NCFM's characteristic-function discrepancy by default), one class
at a time; optionally with NCFM's adversarial sampling network over the frequencies."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.profiler import record_function

from condenser.objectives.base import (
    Objective,
    ObjectiveContext,
    cls_features,
    register_objective,
    zero,
)
from condenser.synthetic import SyntheticShard
from NCFM import METRICS, SamplingNet, negate_grads, sample_frequencies
from utils.distributed import all_reduce_sum
from utils.errors import UserError
from utils.precision import autocast
from utils.registry import opt
from utils.seeding import derive_seed, seeded_sample
from utils.training import cut_to_length


class RealFeatureCache:
    """`real_cache`: the real features of each sample under each (expert, lam grid value), filled
    the first time a batch needs them. One table per (expert, grid index, class) over the class's
    training pool  # feats [N_c, K, H], filled [N_c]"""

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


@dataclass
class FeatureMatchOptions:
    metric: str = opt("ncfm", "Distribution metric: one registered in the NCFM package ('ncfm', "
                      "'mmd', or your own with NCFM.register_metric).")
    metric_options: Dict[str, Any] = opt({}, "The metric's own options (ncfm: alpha, beta; mmd: "
                                         "kernel, sigma; see the metric tables below).")
    layers: List[int] = opt([-1], "Hidden layers whose pooled features are matched (0 = "
                            "embeddings, -1 = last); several are matched and summed.")
    num_freqs: int = opt(512, "Frequencies at which characteristic functions are compared "
                         "(metrics that take frequencies).")
    freq_scale: float = opt(1.0, "Standard deviation of the Gaussian frequencies.")
    loss_scale: float = opt(100.0, "Multiplier of the matching loss (the research code's "
                            "hard-coded constant).")
    batch_real: Optional[int] = opt(None, "Real samples per class and iteration; null: "
                                    "dataset.batch_real.")
    real_cache: bool = opt(False, "Cache the real side (needs condense.lam_grid): each real "
                           "sample's features under (expert, grid value) are computed the first "
                           "time a batch needs them and reused (per rank, its own classes; "
                           "memory: samples x layers x hidden x 4 bytes per grid value and expert). "
                           "A resumed run may switch it.", metadata={"resumable": True})
    sampling_net: bool = opt(False, "Learn the frequencies adversarially (NCFM's min-max sampling "
                             "network).")
    sampling_lr: float = opt(1e-3, "Adam learning rate of the sampling network (gradient ascent).")
    sampling_step_every: int = opt(1, "Update the sampling network every N iterations.")

    def check(self):
        if not self.layers:
            yield "layers", "needs at least one layer"
        for key in ("num_freqs", "sampling_step_every"):
            if getattr(self, key) < 1:
                yield key, "must be >= 1"
        if self.batch_real is not None and self.batch_real < 1:
            yield "batch_real", "must be >= 1 or null"
        if self.sampling_lr <= 0:
            yield "sampling_lr", "must be > 0"

    def resolve(self, where: str) -> None:
        """`metric_options` checked against the metric's own options dataclass."""
        self.metric_options = METRICS.options(self.metric, self.metric_options,
                                              where=f"{where}.metric_options")


@register_objective("feature_match")
class FeatureMatching(Objective):
    """Distribution matching of real and synthetic pooled features (`layers`) of an expert
    interpolated between its initial and final weights, one class at a time, by `metric`."""
    Options = FeatureMatchOptions
    metric_key = "match_loss"

    def __init__(self, ctx: ObjectiveContext, weight: float, options: FeatureMatchOptions):
        super().__init__(ctx, weight, options)
        o = self.options
        self.metric = METRICS.entry(o.metric, where="feature_match options.metric")
        if not isinstance(o.metric_options, self.metric.options_cls):     # set in Python
            o.metric_options = METRICS.options(o.metric, o.metric_options,
                                               where="feature_match options.metric_options")
        self.metric_kwargs = {k: getattr(o.metric_options, k) for k in
                              o.metric_options.__dataclass_fields__}
        self.needs_frequencies = bool(self.metric.trait("needs_frequencies"))
        self.hidden = ctx.pool.match_model.hidden_size
        n = ctx.pool.match_model.num_layers
        bad = [i for i in o.layers if not -(n + 1) <= i <= n]
        if bad:
            raise UserError(f"feature_match options.layers {o.layers}: {bad} out of range; the "
                            f"model has hidden states 0..{n} (or -{n + 1}..-1; 0 = embeddings)")
        if o.real_cache and not ctx.lam_grid:
            raise UserError("feature_match options.real_cache needs a grid of interpolation "
                            "factors: set condense.lam_grid (e.g. 8)")
        self.batch_real = o.batch_real or ctx.batch_real
        self.sampling_net: Optional[SamplingNet] = None
        self.sampling_opt = None
        if o.sampling_net and self.needs_frequencies:
            torch.manual_seed(derive_seed(ctx.seed, "sampling_net"))     # same on all ranks
            self.sampling_net = SamplingNet(self.hidden, o.num_freqs,
                                            init_scale=o.freq_scale).to(ctx.device)
            self.sampling_opt = torch.optim.Adam(self.sampling_net.parameters(), lr=o.sampling_lr)
        self._t = self._t_net = None
        self._choice = None
        self.cache = RealFeatureCache(ctx.train.class_indices) if o.real_cache else None

    def _frequencies(self, it: int):
        if not self.needs_frequencies:
            return None, None
        gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "freq", it))
        if self.sampling_net is not None:
            t_net = self.sampling_net(gen)                               # [F, H], graph to the net
            return t_net.detach().requires_grad_(True), t_net
        return sample_frequencies(self.options.num_freqs, self.hidden, self.options.freq_scale,
                                  gen, device=self.ctx.device), None

    def _real_batch(self, it: int, c: int) -> torch.Tensor:
        seed = derive_seed(self.ctx.seed, "real", it, c)
        return seeded_sample(self.ctx.train.class_indices[c], self.batch_real, seed)

    def _match(self, it: int, shard: SyntheticShard, t, backward: bool) -> torch.Tensor:
        ctx, dev = self.ctx, self.ctx.device
        self._choice = ctx.expert_choice(it)
        model = ctx.pool.load_interval(self._choice)
        layers, total = self.options.layers, zero(ctx)

        @torch.no_grad()
        def real_features(idx: torch.Tensor) -> torch.Tensor:            # [K, B, H]
            with record_function("ncfm.real_features"), autocast(dev, ctx.precision != "fp32"):
                mask, ids = cut_to_length(ctx.train.attention_mask[idx], ctx.train.input_ids[idx])
                if dev.type == "cuda":                    # page-locked: the copy overlaps
                    ids, mask = ids.pin_memory(), mask.pin_memory()
                return cls_features(model, layers, input_ids=ids.to(dev, non_blocking=True),
                                    attention_mask=mask.to(dev, non_blocking=True))

        for c in ctx.my_classes:
            idx = self._real_batch(it, c)
            if self.cache is not None:
                key = (self._choice.expert, self._choice.grid_index)
                feat_real = self.cache.get(key, c, idx, real_features)
            else:
                feat_real = real_features(idx)
            with record_function("ncfm.synthetic_forward"), torch.set_grad_enabled(backward):
                embeds, mask, _ = ctx.decoded(shard, c)
                with autocast(dev, ctx.precision == "bf16"):
                    feat_syn = cls_features(model, layers, inputs_embeds=embeds,  # [K, M, H]
                                            attention_mask=mask)
                per_layer = [self._metric(fr, fs, t) for fr, fs in zip(feat_real, feat_syn)]
                loss = self.options.loss_scale * torch.stack(per_layer).sum()
            if backward:
                with record_function("ncfm.synthetic_backward"):
                    (self.weight * loss).backward()
            total = total + loss.detach().double()          # no host sync per class
        return total

    def _metric(self, feat_real, feat_syn, t):
        if self.needs_frequencies:
            return self.metric.obj(feat_real, feat_syn, t, **self.metric_kwargs)
        return self.metric.obj(feat_real, feat_syn, **self.metric_kwargs)

    def backward(self, it: int, shard: SyntheticShard) -> torch.Tensor:
        self._t, self._t_net = self._frequencies(it)
        return self._match(it, shard, self._t, backward=True)

    @torch.no_grad()
    def loss_at(self, it: int, shard: SyntheticShard) -> float:
        """The loss iteration `it` would see (same expert, frequencies, real batches), summed over
        ranks, without changing anything (tests and diagnostics)."""
        t, _ = self._frequencies(it)
        local = self._match(it, shard, t, backward=False)
        return all_reduce_sum(local.reshape(1)).item()

    def before_step(self, it: int) -> None:
        """The sampling net's ascent step: t's gradient summed over ranks, sign flipped."""
        if self._t_net is None or it % self.options.sampling_step_every:
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
