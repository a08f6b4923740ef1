"""The trajectory-matching term (MTT applied to BERT; the unrolls: `condenser.trajectory`)."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Dict, Literal

import torch

from condenser.objectives.base import Objective, ObjectiveContext, register_objective
from condenser.synthetic import SyntheticShard
from condenser.trajectory import (
    UNROLLS,
    SyntheticBatch,
    activation_importance,
    gradient_importance,
    select_subset,
)
from utils.errors import UserError
from utils.registry import opt
from utils.seeding import derive_seed
from utils.training import cut_to_length

logger = logging.getLogger(__name__)


@dataclass
class TrajectoryOptions:
    syn_steps: int = opt(5, "Student steps on the synthetic set per iteration.")
    expert_epochs: int = opt(1, "The target is the expert `expert_epochs` epochs after the start "
                             "epoch.")
    max_start_epoch: int = opt(1, "Start epochs are drawn from [0, max_start_epoch] (bounded by "
                               "pretrain.epochs - expert_epochs).")
    lr_teacher: float = opt(1e-3, "Initial value of the learnable student learning rate (syn_lr).")
    lr_lr: float = opt(1e-5, "SGD learning rate of syn_lr itself.")
    subset_strategy: Literal["all", "top_k", "classifier", "random", "importance_grad",
                             "importance_act"] = opt(
        "top_k", "Which parameters the student learns and matches: all; top_k (head + top "
        "subset_ratio of layers); classifier (head only); random (seeded subset_ratio of "
        "tensors); importance_grad / importance_act (subset_ratio of tensors with the largest "
        "gradient / activation on a real batch). Others stay at the start weights.")
    subset_ratio: float = opt(0.34, "Fraction of layers / tensors matched by top_k, random and "
                              "importance strategies.")
    unroll: Literal["full", "tesla"] = opt(
        "tesla", "'full' differentiates through every student step (exact, memory grows with "
        "syn_steps); 'tesla' replays the steps with constant memory (first-order, as TESLA).")

    def check(self):
        for key in ("syn_steps", "expert_epochs"):
            if getattr(self, key) < 1:
                yield key, "must be >= 1"
        if self.max_start_epoch < 0:
            yield "max_start_epoch", "must be >= 0"
        if not 0.0 < self.subset_ratio <= 1.0:
            yield "subset_ratio", "must be in (0, 1]"
        if self.lr_teacher <= 0:
            yield "lr_teacher", "must be > 0"


@dataclass
class TrajectoryChoice:
    expert: int
    start_epoch: int


def choose_trajectory(seed: int, iteration: int, num_experts: int, max_start: int) -> TrajectoryChoice:
    rng = random.Random(derive_seed(seed, "trajectory", iteration))
    return TrajectoryChoice(rng.randrange(num_experts), rng.randint(0, max_start))


@register_objective("trajectory")
class TrajectoryObjective(Objective):
    """The trajectory-matching term of a condensation iteration, with its learnable syn_lr. Its
    value is the normalised distance, the same on every rank (replicated)."""
    Options = TrajectoryOptions
    metric_key = "traj_loss"
    replicated = True
    needs_eager_attention = True     # the unroll differentiates through gradients
    trains_labels = True             # the student's loss on the synthetic set uses its labels

    def __init__(self, ctx: ObjectiveContext, weight: float, options: TrajectoryOptions):
        super().__init__(ctx, weight, options)
        o, pool, train, device = self.options, ctx.pool, ctx.train, ctx.device
        per_seq = ctx.factor if ctx.decode_type == "multi" else 1
        self.pool, self.device = pool, device
        self.total = len(ctx.classes) * ctx.ipc * per_seq
        if ctx.expert_epochs_trained < o.expert_epochs:
            raise UserError(f"trajectory options.expert_epochs={o.expert_epochs} needs experts "
                            f"trained for at least that many epochs (pretrain.epochs="
                            f"{ctx.expert_epochs_trained})")
        self.max_start = min(o.max_start_epoch, ctx.expert_epochs_trained - o.expert_epochs)
        model = pool.match_model
        # the word-embedding table is never used by a student fed inputs_embeds: not matchable
        names = [n for n, _ in model.named_parameters() if "word_embeddings" not in n]
        scores = None
        if o.subset_strategy.startswith("importance"):
            scores = self._importance(train, model, o.subset_strategy)
        self.names = select_subset(names, o.subset_strategy, o.subset_ratio, model.num_layers,
                                   seed=derive_seed(ctx.seed, "subset"), scores=scores)
        n_learn = sum(pool.init[0][n].numel() for n in self.names)
        n_all = sum(pool.init[0][n].numel() for n in names)
        logger.info("trajectory matching: subset %s (ratio %g) = %d tensors, %d of %d parameters "
                    "(%.1f%%); unroll %s, %d student steps, start epochs 0..%d, target +%d",
                    o.subset_strategy, o.subset_ratio, len(self.names), n_learn, n_all,
                    100 * n_learn / n_all, o.unroll, o.syn_steps, self.max_start, o.expert_epochs)
        self.syn_lr = torch.tensor(o.lr_teacher, device=device, requires_grad=True)
        self.lr_optimizer = torch.optim.SGD([self.syn_lr], lr=o.lr_lr, momentum=0.5)
        self._choice = None

    def _importance(self, train, model, strategy: str) -> Dict[str, float]:
        gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "importance"))
        idx = torch.randperm(len(train), generator=gen)[:self.ctx.batch_real]
        mask, ids = cut_to_length(train.attention_mask[idx], train.input_ids[idx])
        ids, mask = ids.to(self.device), mask.to(self.device)
        params = self.pool.init[0]
        params = {n: params[n] for n, _ in model.named_parameters()}
        if strategy == "importance_grad":
            return gradient_importance(model, params, ids, mask, train.labels[idx].to(self.device))
        return activation_importance(model, params, ids, mask)

    def _local_batch(self, shard: SyntheticShard) -> SyntheticBatch:
        """All of this rank's decoded synthetic examples, for the student unroll."""
        ctx = self.ctx
        ml = ctx.multilabel
        parts = [ctx.decoded(shard, c) for c in ctx.my_classes]
        if not parts:      # a rank without classes still joins the collectives, with no examples
            L = ctx.train.input_ids.shape[1]
            L = L // ctx.factor if ctx.decode_type == "multi" else L
            H = self.pool.match_model.hidden_size
            empty = torch.zeros(0, L, H, device=self.device, requires_grad=True)
            labels = (torch.zeros(0, ctx.train.labels.shape[1], device=self.device)
                      if ctx.train.labels.dim() == 2 else
                      torch.zeros(0, dtype=torch.long, device=self.device))
            return SyntheticBatch(empty, torch.zeros(0, L, dtype=torch.long, device=self.device),
                                  labels, [empty], ml)
        return SyntheticBatch(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                              torch.cat([p[2] for p in parts]),
                              shard.parameters() + shard.label_parameters(), ml)

    def backward(self, it: int, shard: SyntheticShard) -> torch.Tensor:
        """Accumulate weight * trajectory-loss gradients into the data and syn_lr."""
        o = self.options
        choice = choose_trajectory(self.ctx.seed, it, self.pool.num, self.max_start)
        start_all = self.pool.epoch_weights(choice.expert, choice.start_epoch)
        target_all = self.pool.epoch_weights(choice.expert, choice.start_epoch + o.expert_epochs)
        start = {n: start_all[n] for n in self.names}
        target = {n: target_all[n] for n in self.names}
        fixed = {n: t for n, t in start_all.items() if n not in start}
        self.lr_optimizer.zero_grad(set_to_none=True)
        self._choice = choice
        return UNROLLS[o.unroll](self.pool.match_model, fixed, start, target,
                                 self._local_batch(shard), self.syn_lr, o.syn_steps, self.total,
                                 self.weight)

    def info(self) -> dict:
        # syn_lr stays a tensor here: the condenser reads it with the iteration's one host sync
        return {"syn_lr": self.syn_lr.detach().clone(), "traj_expert": self._choice.expert,
                "start_epoch": self._choice.start_epoch}

    def after_step(self) -> None:
        self.lr_optimizer.step()
        with torch.no_grad():
            self.syn_lr.clamp_(min=1e-8)       # a learning rate stays positive

    def state_dict(self) -> dict:
        return {"syn_lr": self.syn_lr.detach().cpu(), "optimizer": self.lr_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"])
        self.lr_optimizer.load_state_dict(state["optimizer"])
