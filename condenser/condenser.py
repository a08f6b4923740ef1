"""The class-parallel condenser.

Every rank owns a balanced, contiguous block of classes and optimises only their synthetic
embeddings. All randomness of an iteration comes from seeds derived from (run seed, iteration,
class), so the expert choice and the frequencies are the same on every rank, a class's real batch
does not depend on which rank owns it, and a resumed run repeats an uninterrupted one.

An iteration is a loop over the loss terms of `condenser.objectives` (see there for the order):
joint terms put their weighted gradients into the data, one optimiser step follows, then terms
with steps of their own (calibration) take them; every term's value is summed over ranks and the
plateau scheduler steps on the weighted sum of the joint terms.

Host syncs: terms return their values as device tensors; the iteration reads them, the
finite check of the data (one fused reduction) and the tensors of the terms' `info` in ONE
transfer, after the one all-reduce (`_read_values`).

State (`state_dict`) is per part: this rank's shard and optimiser state by class, the scheduler,
each term's own state, the RNG; `gather_state` collects every rank's part on rank 0 only.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from typing import Dict, List, Optional

import torch
from torch.profiler import record_function

from condenser.expert_pool import ExpertPool
from condenser.init import INITS
from condenser.init_context import InitContext
from condenser.objectives import (
    FeatureMatching,
    Objective,
    build_objectives,
    objective_context,
    objective_specs,
)
from condenser.synthetic import SyntheticShard, build_shard
from condenser.tokens import TokenProjection, project_sets, usable_token_ids
from utils.config_schema import Config
from utils.coreset import expert_features
from utils.data import TokenizedSplit
from utils.distributed import DistEnv, all_reduce_sum, gather_objects_to_main, shard_range
from utils.errors import UserError
from utils.seeding import rng_state, set_rng_state

logger = logging.getLogger(__name__)

STATE_VERSION = 2


class NonFiniteError(UserError):
    """A loss or the synthetic data became NaN/Inf."""


def make_optimizer(params: List[torch.Tensor], cfg: Config) -> torch.optim.Optimizer:
    o = cfg.optimization
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr_img, momentum=o.mom_img, weight_decay=o.weight_decay)
    cls = torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr_img * o.lr_scale_adam, weight_decay=o.weight_decay)


def sequences_that_move(fraction: float, ipc: int) -> int:
    """How many of a class's ipc sequences condense.update_fraction lets move: fraction x ipc,
    halves rounded up (not Python's round-half-to-even), at least one."""
    return max(1, math.floor(round(fraction * ipc, 9) + 0.5))   # 0.29 x 50 is 14.4999...


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
        ctx = objective_context(cfg, env, pool, train, self.classes, self.my_classes)
        self.specs = objective_specs(cfg)
        self.terms: List[Objective] = build_objectives(ctx, self.specs)
        self.joint = [t for t in self.terms if not t.own_steps]
        self.own = [t for t in self.terms if t.own_steps]
        self.label_optimizer: Optional[torch.optim.Optimizer] = None
        self.projection: Optional[TokenProjection] = None      # condense.tokens (init_context)
        if cfg.condense.learn_labels:
            if cfg.dataset.is_multilabel:
                raise UserError("condense.learn_labels: learnt soft labels are for single-label "
                                "tasks (a multi-label set keeps its label sets)")
            if not any(t.trains_labels for t in self.terms):
                raise UserError(f"condense.learn_labels: none of the objectives "
                                f"({self.describe_terms()}) trains labels; add the trajectory "
                                f"objective (method trajectory or combined)")

    # ------------------------------------------------------------------------------ set-up
    def init_context(self, tokenizer, nclass: int, multilabel: bool,
                     class_names: Optional[List[str]] = None) -> InitContext:
        c = self.cfg.condense
        if c.tokens:               # token-level set: the projection every forward pass goes through
            self.projection = TokenProjection(self.pool.embedding_table().detach(),
                                              usable_token_ids(tokenizer), tokenizer.cls_token_id,
                                              tokenizer.sep_token_id)
            logger.info("token-level set (condense.tokens): %d of %d vocabulary tokens usable",
                        int((~self.projection.blocked).sum()), len(self.projection.blocked))
        return InitContext(self.train, self.pool.embedding_table().detach().cpu(),
                           tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
                           nclass, multilabel, self.cfg.run.seed,
                           INITS.options(c.init, c.init_options, where="condense.init_options"),
                           features=self._train_features, text_features=self._text_features,
                           head=self._head, tokenizer=tokenizer, class_names=class_names,
                           device=self.env.device)

    def _feature_expert(self) -> int:
        """`evaluate.feature_expert`, checked against the experts there are."""
        k = self.cfg.evaluate.feature_expert
        if k >= self.pool.num:
            raise UserError(f"evaluate.feature_expert = {k} but there are only {self.pool.num} "
                            f"experts (pretrain.num_premodel)")
        return k

    @torch.no_grad()
    def _expert_logits(self, data) -> torch.Tensor:
        """learn_labels with label_init 'expert': the final logits of expert
        `evaluate.feature_expert` on a class's initial sequences  # [ipc, C]"""
        model = self.pool.load_final(self._feature_expert())
        return model(inputs_embeds=data.embeds.to(self.env.device),
                     attention_mask=data.mask.to(self.env.device)).logits

    def _train_features(self, idx: torch.Tensor) -> torch.Tensor:
        """Pooled last-layer features of training samples `idx` under the final weights of expert
        `evaluate.feature_expert` (the herding baseline's features)  # [n, H]"""
        return expert_features(self.pool.load_final(self._feature_expert()), self.train.attention_mask[idx],
                               self.cfg.pretrain.eval_batch_size, self.env.device,
                               input_ids=self.train.input_ids[idx])

    @torch.no_grad()
    def _head(self, features: torch.Tensor) -> torch.Tensor:
        """That expert's classification head on its pooled features  # [n, H] -> [n, C] (CPU)"""
        model = self.pool.load_final(self._feature_expert())
        return model.classifier(features.to(self.env.device)).float().cpu()

    def _text_features(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same features for any tokenised text (init 'generated')  # [n, H]"""
        return expert_features(self.pool.load_final(self._feature_expert()), mask,
                               self.cfg.pretrain.eval_batch_size, self.env.device, input_ids=input_ids)

    def initialize(self, mode: str, ctx: InitContext, loaded: Optional[dict] = None) -> None:
        c = self.cfg.condense
        expert = self._expert_logits if c.label_init == "expert" else None
        self.shard = build_shard(self.my_classes, mode, ctx, c.ipc, c.factor, loaded,
                                 learn_labels=c.learn_labels, expert_logits=expert
                                 ).to(self.env.device)
        self.shard.project = self.projection
        # condense.update_fraction: the first `fixed` sequences of each class keep their start
        fixed = c.ipc - sequences_that_move(c.update_fraction, c.ipc)
        self._held = {k: self.shard.data[k].embeds.detach()[:fixed].clone()
                      for k in self.my_classes} if fixed > 0 else {}
        if fixed > 0:
            logger.info("update_fraction %.2f: the first %d of %d sequences of each class keep their "
                        "start", c.update_fraction, fixed, c.ipc)
        elif c.update_fraction < 1.0:
            logger.warning("update_fraction %.2f at ipc %d holds no sequence (at least one of each "
                           "class moves): every sequence moves", c.update_fraction, c.ipc)
        if c.learn_labels:
            labels = self.shard.label_parameters() or [torch.zeros(0, requires_grad=True)]
            self.label_optimizer = torch.optim.Adam(labels, lr=c.label_lr)
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

    def describe_terms(self) -> str:
        return ", ".join(f"{s.name} x {s.weight:g}" for s in self.specs)

    def describe_options(self) -> str:
        """Every term's options, one `name: {...}` per term (the run log)."""
        return "; ".join(f"{t.metric_key[:-5]}: {vars(t.options)}" for t in self.terms)

    # ------------------------------------------------------------------------- one iteration
    def match_loss_at(self, it: int) -> float:
        """The feature-matching loss iteration `it` would see, summed over ranks, without changing
        anything (tests and diagnostics)."""
        term = next((t for t in self.terms if isinstance(t, FeatureMatching)), None)
        if term is None:
            raise UserError("this run has no feature-matching objective")
        return term.loss_at(it, self.shard)

    def step(self) -> dict:
        """One iteration; returns its record (term values summed over ranks). A non-finite loss
        or synthetic data (any rank) stops the run (`condense.on_nonfinite: stop`, NonFiniteError)
        or undoes the iteration's update (`skip`)."""
        it, start = self.iteration, time.time()
        snapshot = None
        if self.cfg.condense.on_nonfinite == "skip":
            snapshot = ([p.detach().clone() for p in self._all_parameters()],
                        copy.deepcopy(self.optimizer.state_dict()),
                        [copy.deepcopy(t.state_dict()) for t in self.terms],
                        copy.deepcopy(self.label_optimizer.state_dict())
                        if self.label_optimizer else None)
        local: Dict[str, object] = {}      # metric key -> 0-dim tensor (or the last value)
        self.optimizer.zero_grad(set_to_none=True)
        if self.label_optimizer is not None:
            self.label_optimizer.zero_grad(set_to_none=True)
        for term in self.joint:
            with record_function(f"term.{term.metric_key}"):
                local[term.metric_key] = term.backward(it, self.shard)
        with record_function("optimizer"):
            for term in self.joint:
                term.before_step(it)
            self.optimizer.step()
            self._hold_fixed()
            if self.label_optimizer is not None:
                self.label_optimizer.step()
            for term in self.joint:
                term.after_step()
        for term in self.own:
            if it % term.own_every:           # not this iteration's turn (`every`): it logs
                local[term.metric_key] = self._last_logged(term.metric_key)   # its last global value
                continue
            value = 0.0
            with record_function(f"term.{term.metric_key}"):
                for _ in range(term.own_steps):
                    self.optimizer.zero_grad(set_to_none=True)
                    value += term.backward(it, self.shard)
                    self.optimizer.step()
                    self._hold_fixed()
            local[term.metric_key] = value

        keys = [t.metric_key for t in self.terms]
        repeated = [t.replicated or bool(it % t.own_every) for t in self.terms]  # not summed
        info: dict = {}
        for term in self.terms:
            info.update(term.info())
        values, info = self._read_values(local, repeated, info)
        if values.pop("_data_bad") > 0 or not all(math.isfinite(v) for v in values.values()):
            return self._nonfinite(it, values, snapshot, start)
        objective = sum(t.weight * values[t.metric_key] for t in self.joint)
        if self.scheduler is not None:
            self.scheduler.step(objective)
        self.iteration += 1
        record = {"iteration": self.iteration, **{k: values[k] for k in keys},
                  "lr": self.optimizer.param_groups[0]["lr"], **info}
        record["seconds"] = round(time.time() - start, 3)
        self.history.append(record)
        return record

    @torch.no_grad()
    def _hold_fixed(self) -> None:
        """condense.update_fraction < 1: put the held sequences back where they started (a device
        copy per class, no host sync)."""
        for k, start in self._held.items():
            self.shard.data[k].embeds[:len(start)].copy_(start)

    def _read_values(self, local: dict, repeated: List[bool], info: dict) -> tuple:
        """The iteration's one host sync: the terms' values (summed over ranks unless replicated
        or not their turn), a fused finite check of the synthetic data (any rank) and the
        tensor-valued `info` fields, read in one transfer after one all-reduce."""
        dev = self.env.device
        as64 = lambda v: torch.as_tensor(v, dtype=torch.float64, device=dev).reshape(())  # noqa: E731
        params = self._all_parameters()
        if params:           # one fused reduction: any NaN/Inf in any of this rank's tensors
            data_bad = torch.stack([torch.isfinite(p).all() for p in params]).logical_not().any()
        else:
            data_bad = torch.zeros((), dtype=torch.bool, device=dev)
        vals = [local[t.metric_key] for t in self.terms]
        summed = torch.stack([torch.zeros((), dtype=torch.float64, device=dev) if rep else as64(v)
                              for v, rep in zip(vals, repeated)] + [as64(data_bad)])
        with record_function("collectives"):
            summed = all_reduce_sum(summed)
        tensor_info = [k for k, v in info.items() if torch.is_tensor(v)]
        kept = [as64(v) for v, rep in zip(vals, repeated) if rep]
        flat = torch.cat([summed, torch.stack(kept + [as64(info[k]) for k in tensor_info])
                          if kept or tensor_info else summed.new_zeros(0)]).tolist()   # the sync
        n = len(self.terms)
        out, rest = {}, iter(flat[n + 1:])
        for i, (t, rep) in enumerate(zip(self.terms, repeated)):
            out[t.metric_key] = next(rest) if rep else flat[i]
        out["_data_bad"] = flat[n]
        info = {**info, **{k: next(rest) for k in tensor_info}}
        return out, info

    def _nonfinite(self, it: int, values: dict, snapshot, start: float) -> dict:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        if snapshot is None:
            raise NonFiniteError(
                f"iteration {it + 1}: the condensation became non-finite ({shown}; NaN/Inf in a "
                f"loss or in the synthetic data). Nothing from it was saved: the last saved set and "
                f"checkpoint are intact. Lower optimization.lr_img, or set "
                f"condense.on_nonfinite=skip to skip such iterations.")
        params, opt, terms, label_opt = snapshot
        with torch.no_grad():
            for p, old in zip(self._all_parameters(), params):
                p.copy_(old)
        self.optimizer.load_state_dict(opt)
        if label_opt is not None:
            self.label_optimizer.load_state_dict(label_opt)
        for term, state in zip(self.terms, terms):
            term.load_state_dict(state)
        logger.warning("iteration %d: non-finite (%s); its update was undone (on_nonfinite=skip)",
                       it + 1, shown)
        self.iteration += 1
        record = {"iteration": self.iteration, "skipped": True,
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(time.time() - start, 3)}
        self.history.append(record)
        return record

    def _last_logged(self, key: str) -> float:
        """The newest value of `key` in the history (summed over ranks; 0 before any)."""
        return next((h[key] for h in reversed(self.history) if key in h), 0.0)

    def output(self, per_class: dict) -> dict:
        """The set to save from gathered per-class data: as optimised, or (condense.tokens) its
        nearest tokens. Checkpoints keep the continuous copy; the set is what was trained on."""
        if self.projection is None:
            return per_class
        return project_sets(per_class, self.projection, sorted(per_class))

    def _all_parameters(self) -> List[torch.Tensor]:
        return self.shard.parameters() + self.shard.label_parameters()

    # ------------------------------------------------------------------------- state (I/O)
    def _by_class(self, optimizer: Optional[torch.optim.Optimizer]) -> dict:
        if optimizer is None:
            return {}
        opt = optimizer.state_dict()["state"]
        return {c: {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in opt.get(i, {}).items()}
                for i, c in enumerate(self.my_classes)}

    def state_dict(self) -> dict:
        """This rank's part of the state (CPU tensors and plain values)."""
        return {"data": self.shard.state_dict(), "opt_state": self._by_class(self.optimizer),
                "label_opt_state": self._by_class(self.label_optimizer), "rng": rng_state()}

    def gather_state(self) -> Optional[dict]:
        """Collective: every rank's part merged on rank 0 (None elsewhere), with the replicated
        parts (scheduler, terms, history) taken from rank 0."""
        parts = gather_objects_to_main(self.state_dict())
        if not self.env.is_main:
            return None
        data, opt, label_opt = {}, {}, {}
        for p in parts:
            data.update(p["data"])
            opt.update(p["opt_state"])
            label_opt.update(p["label_opt_state"])
        groups = [{k: v for k, v in g.items() if k != "params"}
                  for g in self.optimizer.state_dict()["param_groups"]]
        return {"version": STATE_VERSION, "iteration": self.iteration, "classes": self.classes,
                "data": data, "opt_state": opt, "opt_groups": groups,
                "label_opt_state": label_opt,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "terms": {t.metric_key: t.state_dict() for t in self.terms},
                "rng": [p["rng"] for p in parts], "history": self.history,
                "world_size": self.env.world_size}

    def load_state_dict(self, state: dict, ctx: InitContext) -> None:
        """Restore a gathered state (any world size): each rank takes its own classes."""
        if state.get("version") != STATE_VERSION:
            raise UserError(f"the checkpoint was written by an older textcondense (state version "
                            f"{state.get('version', 1)}, this one reads {STATE_VERSION}); use "
                            f"another --output_dir")
        if list(state["classes"]) != self.classes:
            raise UserError(f"checkpoint condenses classes {state['classes']}, this run "
                            f"{self.classes}; use another --output_dir")
        self.initialize("load", ctx, loaded=state["data"])
        if self.my_classes:
            opt = {"state": {i: state["opt_state"][c] for i, c in enumerate(self.my_classes)
                             if state["opt_state"].get(c)},
                   "param_groups": [{**g, "params": list(range(len(self.my_classes)))}
                                    for g in state["opt_groups"]]}
            self.optimizer.load_state_dict(opt)
            if self.label_optimizer is not None:
                saved = state.get("label_opt_state", {})
                sd = self.label_optimizer.state_dict()
                sd["state"] = {i: saved[c] for i, c in enumerate(self.my_classes) if saved.get(c)}
                self.label_optimizer.load_state_dict(sd)
        else:
            for g in self.optimizer.param_groups:
                g["lr"] = state["opt_groups"][0]["lr"]
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for term in self.terms:
            term.load_state_dict(state["terms"].get(term.metric_key, {}))
        if state["world_size"] == self.env.world_size:
            set_rng_state(state["rng"][self.env.rank])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
