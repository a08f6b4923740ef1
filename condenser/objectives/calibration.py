"""Calibration: optimiser steps of their own after the joint step, on the label loss of the
iteration's expert (final weights) on the synthetic data."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from condenser.objectives.base import Objective, ObjectiveContext, register_objective, zero
from condenser.synthetic import SyntheticShard
from utils.precision import autocast
from utils.registry import opt
from utils.training import label_loss


@dataclass
class CalibrationOptions:
    steps: int = opt(1, "Calibration optimiser steps per iteration (was condense.iter_calib).")
    every: int = opt(1, "Take the steps on every N-th iteration only (1: every iteration). A "
                     "cost lever: calibration is about a quarter of an NCFM iteration; skipped "
                     "iterations log the last value (was condense.calib_every).")

    def check(self):
        if self.steps < 1:
            yield "steps", "must be >= 1 (leave the calibration term out to disable it)"
        if self.every < 1:
            yield "every", "must be >= 1"


@register_objective("calibration")
class Calibration(Objective):
    """`steps` optimiser steps of their own after the joint step: the label loss of the
    iteration's expert (final weights) on the synthetic data (CE; BCE for multi-label; soft CE
    for soft labels). The recorded value is weighted, averaged over its steps."""
    Options = CalibrationOptions
    metric_key = "calib_loss"

    def __init__(self, ctx: ObjectiveContext, weight: float, options: CalibrationOptions):
        super().__init__(ctx, weight, options)
        self.own_steps = self.options.steps
        self.own_every = self.options.every
        self._expert = None

    def backward(self, it: int, shard: SyntheticShard) -> torch.Tensor:
        ctx = self.ctx
        self._expert = ctx.expert_choice(it, grid=False).expert   # feature matching's expert
        final = ctx.pool.load_final(self._expert)
        total = zero(ctx)
        for c in ctx.my_classes:
            embeds, mask, labels = ctx.decoded(shard, c)
            with autocast(ctx.device, ctx.precision == "bf16"):
                logits = final(inputs_embeds=embeds, attention_mask=mask).logits.float()
            # the data moves toward its labels; learnt labels are not pulled toward the expert
            loss = self.weight * label_loss(logits, labels.detach(), ctx.multilabel)
            loss.backward()
            total = total + loss.detach().double() / max(1, self.own_steps)
        return total

    def info(self) -> dict:
        return {"calib_expert": self._expert}
