"""The class-parallel condenser (NCFM).

Every rank owns a balanced, contiguous block of classes and optimises only their synthetic
embeddings. All randomness of an iteration comes from seeds derived from (run seed, iteration,
class), so the expert choice and the frequencies are the same on every rank, a class's real batch
does not depend on which rank owns it, and a resumed run repeats an uninterrupted one.

One iteration:
1. choose expert k and lam (`choose_expert`); model_interval = lerp(init_k, final_k, lam);
2. frequencies t: Gaussian, or from the sampling network;
3. per owned class: real batch -> features (no grad); decoded synthetic -> features;
   match loss (NCFM or MMD) backward into the synthetic embeddings (and into t);
4. sampling network: t's gradient summed over ranks, sign flipped, one Adam step (ascent);
5. one optimiser step on the synthetic embeddings;
6. `iter_calib` calibration steps: classification loss of model_final on the synthetic data;
7. losses summed over ranks; plateau scheduler steps on the total matching loss.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional

import torch

from NCFM import SamplingNet, negate_grads, sample_frequencies
from condenser.expert_pool import ExpertPool, choose_expert
from condenser.losses import calibration_loss, cls_features, match_loss
from condenser.synthetic import InitContext, SyntheticShard, build_shard, decode
from condenser.trajectory import SyntheticBatch, TrajectoryObjective
from utils.config_schema import Config
from utils.data import TokenizedSplit
from utils.distributed import (DistEnv, all_gather_objects, all_reduce_sum, derive_seed, rng_state,
                               set_rng_state, shard_range)

logger = logging.getLogger(__name__)


def make_optimizer(params: List[torch.Tensor], cfg: Config) -> torch.optim.Optimizer:
    o = cfg.optimization
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr_img, momentum=o.mom_img, weight_decay=o.weight_decay)
    cls = torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr_img * o.lr_scale_adam, weight_decay=o.weight_decay)


class Condenser:
    def __init__(self, cfg: Config, env: DistEnv, train: TokenizedSplit, pool: ExpertPool,
                 classes: List[int]):
        self.cfg, self.env, self.train, self.pool = cfg, env, train, pool
        self.classes = list(classes)                                   # all condensed classes
        self.my_classes = [self.classes[i] for i in
                           shard_range(len(self.classes), env.world_size, env.rank)]
        self.hidden = pool.match_model.hidden_size
        self.iteration = 0
        self.history: List[dict] = []                                   # per-iteration metrics
        self.shard: Optional[SyntheticShard] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler = None
        self.sampling_net: Optional[SamplingNet] = None
        self.sampling_opt: Optional[torch.optim.Optimizer] = None
        self.trajectory: Optional[TrajectoryObjective] = None
        if cfg.condense.method in ("trajectory", "combined"):
            per_seq = cfg.condense.factor if cfg.condense.decode_type == "multi" else 1
            self.trajectory = TrajectoryObjective(cfg, pool, train, env.device,
                                                  len(self.classes) * cfg.condense.ipc * per_seq)
        if cfg.condense.sampling_net:
            torch.manual_seed(derive_seed(cfg.run.seed, "sampling_net"))  # identical on all ranks
            self.sampling_net = SamplingNet(self.hidden, cfg.condense.num_freqs,
                                            init_scale=cfg.condense.freq_scale).to(env.device)
            self.sampling_opt = torch.optim.Adam(self.sampling_net.parameters(),
                                                 lr=cfg.optimization.sampling_lr)

    # ------------------------------------------------------------------------------ set-up
    def init_context(self, tokenizer, nclass: int, multilabel: bool) -> InitContext:
        return InitContext(self.train, self.pool.embedding_table().detach().cpu(),
                           tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
                           nclass, multilabel, self.cfg.run.seed, self.cfg.condense)

    def initialize(self, mode: str, ctx: InitContext, loaded: Optional[dict] = None) -> None:
        c = self.cfg.condense
        self.shard = build_shard(self.my_classes, mode, ctx, c.ipc, c.factor, loaded).to(self.env.device)
        # A rank that owns no class (world size > classes) still steps an (empty) optimiser so that
        # every rank runs the same collectives and scheduler.
        params = self.shard.parameters() or [torch.zeros(0, requires_grad=True)]
        self.optimizer = make_optimizer(params, self.cfg)
        o = self.cfg.optimization
        if o.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=o.plateau_factor, patience=o.plateau_patience,
                min_lr=o.min_lr)
        logger.info("rank %d condenses classes %s (%d synthetic sequences)", self.env.rank,
                    self.my_classes, len(self.my_classes) * c.ipc)

    # ------------------------------------------------------------------------- one iteration
    def _frequencies(self, it: int):
        c = self.cfg.condense
        if c.dis_metrics != "NCFM":
            return None, None
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, "freq", it))
        if self.sampling_net is not None:
            t_net = self.sampling_net(gen)                               # [F, H], graph to the net
            return t_net.detach().requires_grad_(True), t_net
        return sample_frequencies(c.num_freqs, self.hidden, c.freq_scale, gen,
                                  device=self.env.device), None

    def _real_batch(self, it: int, c: int) -> torch.Tensor:
        pool = self.train.class_indices[c]
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, "real", it, c))
        return pool[torch.randperm(len(pool), generator=gen)[:self.cfg.dataset.batch_real]]

    def _match(self, model, it: int, t: Optional[torch.Tensor], backward: bool) -> float:
        """Matching loss of this rank's classes, summed; with `backward`, gradients flow into the
        synthetic embeddings (and t) one class at a time to bound memory."""
        c, dev, layers = self.cfg.condense, self.env.device, self.cfg.network.layer_index
        total = 0.0
        for cls in self.my_classes:
            idx = self._real_batch(it, cls)
            with torch.no_grad():
                feat_real = cls_features(model, layers, input_ids=self.train.input_ids[idx].to(dev),
                                         attention_mask=self.train.attention_mask[idx].to(dev))
            with torch.set_grad_enabled(backward):
                embeds, mask, _ = decode(self.shard.data[cls], c.factor, c.decode_type)
                feat_syn = cls_features(model, layers, inputs_embeds=embeds, attention_mask=mask)
                loss = match_loss(feat_real, feat_syn, t, c)             # scalar
            if backward:
                loss.backward()
            total += loss.item()
        return total

    @torch.no_grad()
    def match_loss_at(self, it: int) -> float:
        """The matching loss iteration `it` would see (same expert, frequencies and real batches),
        summed over all ranks, without changing anything. Used by tests and diagnostics."""
        choice = choose_expert(self.cfg.run.seed, it, self.pool.num, self.cfg.condense.interp_range)
        t, _ = self._frequencies(it)
        local = self._match(self.pool.load_interval(choice), it, t, backward=False)
        return all_reduce_sum(torch.tensor([local], dtype=torch.float64, device=self.env.device)).item()

    def step(self) -> dict:
        """One iteration; returns metrics summed over all ranks."""
        cfg, c, dev = self.cfg, self.cfg.condense, self.env.device
        it = self.iteration
        start = time.time()
        choice = choose_expert(cfg.run.seed, it, self.pool.num, c.interp_range)
        ncfm = c.method != "trajectory"
        t, t_net = self._frequencies(it) if ncfm else (None, None)

        self.optimizer.zero_grad(set_to_none=True)
        match_sum = self._match(self.pool.load_interval(choice), it, t, backward=True) if ncfm else 0.0
        traj = None
        if self.trajectory is not None:
            weight = c.trajectory_weight if c.method == "combined" else 1.0
            traj, traj_choice = self.trajectory.backward(it, self._local_batch(), weight)

        if t_net is not None and it % cfg.optimization.sampling_step_every == 0:
            grad = t.grad if t.grad is not None else torch.zeros_like(t)
            all_reduce_sum(grad)                                         # one net for all ranks
            self.sampling_opt.zero_grad(set_to_none=True)
            t_net.backward(grad)
            negate_grads(self.sampling_net)                              # ascent: maximise the loss
            self.sampling_opt.step()
        self.optimizer.step()
        if self.trajectory is not None:
            self.trajectory.step()

        calib_sum = 0.0
        if c.iter_calib > 0:
            final = self.pool.load_final(choice.expert)
            for _ in range(c.iter_calib):
                self.optimizer.zero_grad(set_to_none=True)
                for cls in self.my_classes:
                    embeds, mask, labels = decode(self.shard.data[cls], c.factor, c.decode_type)
                    loss = calibration_loss(final, embeds, mask, labels, c.calib_weight)
                    loss.backward()
                    calib_sum += loss.item() / c.iter_calib
                self.optimizer.step()

        totals = all_reduce_sum(torch.tensor([match_sum, calib_sum], dtype=torch.float64,
                                             device=dev)).tolist()
        objective = totals[0] + (traj * (c.trajectory_weight if c.method == "combined" else 1.0)
                                 if traj is not None else 0.0)
        if self.scheduler is not None:
            self.scheduler.step(objective)
        self.iteration += 1
        record = {"iteration": self.iteration, "match_loss": totals[0], "calib_loss": totals[1],
                  "lr": self.optimizer.param_groups[0]["lr"],
                  "expert": choice.expert,           # NCFM's model_interval / calibration expert
                  "lam": round(choice.lam, 4) if ncfm else None,
                  "seconds": round(time.time() - start, 3)}
        if traj is not None:   # the trajectory term uses its own expert and start epoch
            record.update(traj_loss=traj, syn_lr=self.trajectory.syn_lr.item(),
                          traj_expert=traj_choice.expert, start_epoch=traj_choice.start_epoch)
        self.history.append(record)
        return record

    def _local_batch(self) -> SyntheticBatch:
        """All of this rank's decoded synthetic examples, for the student unroll."""
        c = self.cfg.condense
        parts = [decode(self.shard.data[cls], c.factor, c.decode_type) for cls in self.my_classes]
        if not parts:      # a rank without classes still joins the collectives, with no examples
            L = self.train.input_ids.shape[1]
            if c.decode_type == "multi":
                L = L // c.factor
            empty = torch.zeros(0, L, self.hidden, device=self.env.device, requires_grad=True)
            labels = (torch.zeros(0, self.train.labels.shape[1], device=self.env.device)
                      if self.train.labels.dim() == 2 else
                      torch.zeros(0, dtype=torch.long, device=self.env.device))
            return SyntheticBatch(empty, torch.zeros(0, L, dtype=torch.long, device=self.env.device),
                                  labels, [empty])
        return SyntheticBatch(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                              torch.cat([p[2] for p in parts]), self.shard.parameters())

    # ------------------------------------------------------------------------- state (I/O)
    def _optimizer_state_by_class(self) -> Dict[int, dict]:
        state = self.optimizer.state_dict()["state"]
        return {cls: state.get(i, {}) for i, cls in enumerate(self.my_classes)}

    def gather(self) -> Optional[dict]:
        """Collective: every rank's shard, optimiser state and RNG, merged on rank 0."""
        parts = all_gather_objects({"data": self.shard.export(),
                                    "opt": {c: {k: (v.cpu() if torch.is_tensor(v) else v)
                                                for k, v in s.items()}
                                            for c, s in self._optimizer_state_by_class().items()},
                                    "rng": rng_state()})
        if not self.env.is_main:
            return None
        data, opt = {}, {}
        for p in parts:
            data.update(p["data"])
            opt.update(p["opt"])
        groups = [{k: v for k, v in g.items() if k != "params"}
                  for g in self.optimizer.state_dict()["param_groups"]]
        return {"iteration": self.iteration, "classes": self.classes, "data": data,
                "opt_state": opt, "opt_groups": groups,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "sampling_net": self.sampling_net.state_dict() if self.sampling_net else None,
                "sampling_opt": self.sampling_opt.state_dict() if self.sampling_opt else None,
                "trajectory": self.trajectory.state_dict() if self.trajectory else None,
                "rng": [p["rng"] for p in parts], "history": self.history,
                "world_size": self.env.world_size}

    def load_state_dict(self, state: dict, ctx: InitContext) -> None:
        """Restore a gathered state (any world size): each rank takes its own classes."""
        if list(state["classes"]) != self.classes:
            raise ValueError(f"checkpoint condenses classes {state['classes']}, this run "
                             f"{self.classes}; use another --output_dir")
        self.initialize("load", ctx, loaded=state["data"])
        if self.my_classes:
            opt = {"state": {i: state["opt_state"][cls] for i, cls in enumerate(self.my_classes)
                             if state["opt_state"].get(cls)},
                   "param_groups": [{**g, "params": list(range(len(self.my_classes)))}
                                    for g in state["opt_groups"]]}
            self.optimizer.load_state_dict(opt)
        else:
            for g in self.optimizer.param_groups:
                g["lr"] = state["opt_groups"][0]["lr"]
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.sampling_net is not None:
            self.sampling_net.load_state_dict(state["sampling_net"])
            self.sampling_opt.load_state_dict(state["sampling_opt"])
        if self.trajectory is not None and state.get("trajectory"):
            self.trajectory.load_state_dict(state["trajectory"])
        if state["world_size"] == self.env.world_size:
            set_rng_state(state["rng"][self.env.rank])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
