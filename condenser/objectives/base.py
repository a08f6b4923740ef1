"""What every condensation term is: the `Objective` interface, the runtime context it reads, and
the `OBJECTIVES` registry (`condense.objectives: [{name, weight, options}]`).

A term is a class registered with `@register_objective("name")`; its nested `Options` dataclass
(fields made with `utils.registry.opt`, so they carry help text) holds the keys of its `options`
mapping, validated at config load and listed in docs/config.md. What it needs from the run is a
class attribute (a trait), never a name the loop tests:

    needs_eager_attention   second-order gradients through the expert (no fused attention)
    trains_labels           its gradient reaches learnt labels (condense.learn_labels)
    replicated              backward returns the global value, the same on every rank
    own_steps / own_every   optimiser steps of its own after the joint step (calibration)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Type

import torch
import torch.nn.functional as F

from condenser.expert_pool import ExpertChoice, ExpertPool, choose_expert
from condenser.synthetic import SyntheticShard
from utils.data import TokenizedSplit
from utils.distributed import DistEnv
from utils.registry import NoOptions, Registry
from utils.synset import decode

OBJECTIVES: Registry = Registry("objective", publish=True)


@dataclass
class ObjectiveContext:
    """What a term may read besides its options: the ranks, the experts, the real training split
    and the few run-level settings several terms share. Never the whole `Config`."""
    env: DistEnv
    pool: ExpertPool
    train: TokenizedSplit
    classes: List[int]       # every condensed class
    my_classes: List[int]    # the classes this rank owns
    seed: int                # run.seed: every draw derives from it (derive_seed)
    multilabel: bool
    precision: str           # condense.precision resolved for the device: fp32, bf16_real, bf16
    ipc: int
    factor: int              # condense.factor / decode_type: how a sequence decodes
    decode_type: str
    batch_real: int          # dataset.batch_real: real samples per class and iteration
    expert_epochs_trained: int   # pretrain.epochs: the epochs each expert's trajectory has
    # expert sampling is shared by feature matching and calibration (the same expert in one
    # iteration), so its two keys stay run-level (condense.interp_range, condense.lam_grid)
    interp_range: Sequence[float] = (0.0, 1.0)
    lam_grid: int = 0

    @property
    def device(self) -> torch.device:
        return self.env.device

    def decoded(self, shard: SyntheticShard, c: int):
        """Class c's training examples (embeds [M, L, H], mask [M, L], labels [M] or [M, C])."""
        return decode(shard.class_data(c), self.factor, self.decode_type)

    def expert_choice(self, it: int, grid: bool = True) -> ExpertChoice:
        """Iteration `it`'s expert and interpolation factor (identical on every rank); without
        `grid`, lam drawn uniformly (only the expert is then used, e.g. by calibration)."""
        return choose_expert(self.seed, it, self.pool.num, self.interp_range,
                             self.lam_grid if grid else None)


class Objective:
    """One term of the condensation loss.

    `backward` accumulates `weight` x the gradient of the term into the synthetic data and returns
    the term's unweighted value as a 0-dim tensor (no host sync): this rank's share (summed over
    ranks by the condenser) or, for a `replicated` term, the global value every rank computed.
    """
    Options: Type = NoOptions
    metric_key = "loss"     # the key of its value in the iteration record; '<name>_loss' if unset
    replicated = False
    own_steps = 0
    own_every = 1
    needs_eager_attention = False
    trains_labels = False

    def __init__(self, ctx: ObjectiveContext, weight: float, options=None):
        self.ctx, self.weight = ctx, weight
        self.options = options if options is not None else self.Options()

    def backward(self, it: int, shard: SyntheticShard) -> torch.Tensor:
        raise NotImplementedError

    def before_step(self, it: int) -> None:
        """After every joint term's backward, before the optimiser step."""

    def after_step(self) -> None:
        """After the optimiser step."""

    def info(self) -> dict:
        """Extra fields of the iteration record (e.g. which expert the term used); read at log
        points only, so values may be tensors (the condenser turns them into numbers)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def register_objective(name: str, options: Optional[type] = None, **traits
                       ) -> Callable[[Type[Objective]], Type[Objective]]:
    """Class decorator: make an `Objective` subclass usable as `{name: <name>}` in the config
    (its options: `options=` or the class's nested `Options` dataclass)."""
    return OBJECTIVES.register(name, options=options, **traits)


def zero(ctx: ObjectiveContext) -> torch.Tensor:
    """A 0-dim float64 accumulator on the run's device (a term's value, summed without syncs)."""
    return torch.zeros((), dtype=torch.float64, device=ctx.device)


def cls_features(model, layer_index, **inputs) -> torch.Tensor:
    """L2-normalised pooled features of the chosen layers  # [K, B, H] (fp32)"""
    return F.normalize(model(layer_index=layer_index, **inputs).features.float(), dim=-1)


