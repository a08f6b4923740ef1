"""Training a student against a teacher: the loss mix, data parallelism, checkpoints and resume.

One `Distiller` trains one student with the configured `distill.losses` (or, for the no-teacher
baseline, with `label_ce` alone) through the project's one trainer (`utils.training.train_steps`).
It reads what each loss needs from its registry traits (distiller/losses.py), never its name.

- Data parallel: every rank holds the whole student, wrapped in torch's DistributedDataParallel
  (gloo on CPU, nccl on CUDA). Step i's global batch is the same on every rank and each trains on
  its slice; DDP averages the gradients over ranks in the backward pass, before clipping and the
  optimiser step, so the update is the single-process one when the batch size is a multiple of the
  world size. The loss terms are computed inside `DistillModule.forward`, so every learnt
  parameter (student, projections) is used within what DDP wraps.
- The teacher is frozen and reads `teacher_sources`: the same examples, in its own tokenisation
  when the student has another tokenizer (`distill.student_path`). Its logits are computed once
  for the fixed training data (the batches shared out over the ranks, then gathered) and cached,
  unless a loss needs its hidden states or attention maps (then it runs on each batch).
- Checkpoints every `save_every` steps (utils.checkpoint: state, then the COMPLETE marker): the
  student and projections, the centroid memory, optimiser, scheduler, step, history and every
  rank's RNG. Re-running the same command resumes; the batches resume at the same global step.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distiller.cka import CentroidMemory
from distiller.data import Sources, global_batches, rank_slice
from distiller.losses import KDContext, Pairs, Term, build_terms, projection_key, shared_option
from distiller.student import HFClassifier
from utils import tracking
from utils.checkpoint import check_resumable, load_latest, save_checkpoint, set_aside
from utils.config_schema import Config, KDLossSpec
from utils.distributed import DistEnv, all_gather_objects, gather_objects_to_main, main_then_broadcast
from utils.errors import UserError
from utils.model import ClassifierOutput
from utils.precision import at_least_fp32, uses_bf16
from utils.seeding import derive_seed, rng_state, seed_everything, set_rng_state
from utils.training import adamw, linear_warmup_decay, train_steps

logger = logging.getLogger(__name__)

STATE_VERSION = 1
Active = List[Tuple[Term, Optional[Pairs], float]]   # (term, its pairs this step or None: off, weight)


class DistillModule(nn.Module):
    """The trainable part: the student plus the learnt projections of the hidden-state losses.
    Its forward is the student's forward and the weighted loss terms (what DDP wraps)."""

    def __init__(self, student: HFClassifier, projections: nn.ModuleDict, need_hidden: bool,
                 need_attention: bool):
        super().__init__()
        self.student, self.projections = student, projections
        self.need_hidden, self.need_attention = need_hidden, need_attention

    def forward(self, inputs: dict, ctx: KDContext, active: Active
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(total loss, each term's value [K], detached; 0 for a term that is off)."""
        ctx.student = self.student(**inputs, output_hidden_states=self.need_hidden,
                                   output_attentions=self.need_attention)
        if torch.is_autocast_enabled(ctx.student.logits.device.type):   # distill.precision bf16
            ctx.student, ctx.teacher = as_fp32(ctx.student), as_fp32(ctx.teacher)
            if ctx.trajectory_logits is not None:
                ctx.trajectory_logits = at_least_fp32(ctx.trajectory_logits)
        with torch.autocast(ctx.student.logits.device.type, enabled=False):  # the terms in fp32
            return self._terms(ctx, active)

    def _terms(self, ctx: KDContext, active: Active) -> Tuple[torch.Tensor, torch.Tensor]:
        ctx.student_model, ctx.projections = self.student, self.projections
        total = ctx.student.logits.new_zeros(())
        values = []
        for term, pairs, weight in active:
            if pairs is None:
                values.append(total.new_zeros(()))
                continue
            value = term(ctx, pairs)
            total = total + weight * value
            values.append(value.detach())
        return total, torch.stack(values)


def as_fp32(out: Optional[ClassifierOutput]) -> Optional[ClassifierOutput]:
    """Every tensor of a model's outputs in fp32 (bf16 under autocast), so that the loss terms
    compare in full precision."""
    if out is None:
        return None

    def f(t):  # a tensor, a per-layer tuple of tensors, or None
        return at_least_fp32(t) if isinstance(t, torch.Tensor) else \
            None if t is None else tuple(at_least_fp32(x) for x in t)
    return ClassifierOutput(f(out.logits), f(out.features), f(out.attentions),
                            f(out.hidden_states))


class TrajectoryTeacher:
    """trajectory_kd: the teacher's checkpoints along its training, one per trajectory point;
    `logits(step)` uses the checkpoint of the point that step falls in."""

    def __init__(self, model: nn.Module, points: List[int], load: Callable[[int], dict], steps: int):
        self.model, self.points, self.load, self.steps = model, points, load, steps
        self.current: Optional[int] = None

    def epoch_at(self, step: int) -> int:
        return self.points[min(len(self.points) - 1, step * len(self.points) // self.steps)]

    @torch.no_grad()
    def logits(self, step: int, inputs: dict) -> torch.Tensor:
        epoch = self.epoch_at(step)
        if epoch != self.current:
            self.model.load_state_dict(self.load(epoch))
            self.current = epoch
        return self.model(**inputs).logits


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Collective: every rank's rows of `t` (detached), rank by rank  # [sum of B_r, ...]"""
    parts = all_gather_objects(t.detach().cpu())
    return torch.cat(parts).to(t.device)


def resumable_state(out_dir: Path, settings: dict) -> Optional[tuple]:
    """The newest loadable checkpoint of out_dir as (path, state), or None; refused (UserError)
    when another version or other settings wrote it."""
    found = load_latest(out_dir)
    if found is None:
        return None
    if found[1].get("version") != STATE_VERSION:
        raise UserError(f"{found[0]} was written by another textcondense version; use "
                        f"another --output_dir")
    check_resumable(found[1], settings, found[0])
    return str(found[0]), found[1]


class Distiller:
    def __init__(self, cfg: Config, env: DistEnv, teacher: nn.Module, student: HFClassifier,
                 sources: Sources, multilabel: bool, specs: Sequence[KDLossSpec], out_dir: Path,
                 trajectory: Optional[TrajectoryTeacher] = None, teacher_layers: int = 0,
                 settings: Optional[dict] = None, teacher_sources: Optional[Sources] = None):
        d = cfg.distill
        self.cfg, self.env, self.d = cfg, env, d
        self.teacher, self.sources, self.multilabel = teacher, sources, multilabel
        # the same examples in the teacher's tokenisation (a student of another tokenizer)
        self.teacher_sources = teacher_sources if teacher_sources is not None else sources
        self.out_dir, self.trajectory = Path(out_dir), trajectory
        self.settings = settings or {}      # what must match to resume (utils.checkpoint)
        self.terms = build_terms(specs, teacher_layers, student.num_layers)

        def needs(trait: str) -> bool:
            return any(t.trait(trait) for t in self.terms)
        if needs("needs_trajectory") and trajectory is None:
            raise UserError("distill.losses: a trajectory loss needs an expert teacher (its epoch "
                            "checkpoints); distill.teacher_path has none")
        projections = nn.ModuleDict()
        if student.hidden_size != teacher.hidden_size:
            for term in self.terms:
                for t, s in term.pairs if term.trait("projects_hidden") else ():
                    projections[projection_key(t, s)] = nn.Linear(student.hidden_size,
                                                                  teacher.hidden_size)
        self.module = DistillModule(student, projections, needs("needs_hidden"),
                                    needs("needs_attention")).to(env.device)
        self.memory: Optional[CentroidMemory] = None
        if needs("needs_memory"):
            k = shared_option(specs, "needs_memory", "num_centroid")
            self.memory = self._build_memory(student.hidden_size, k)
        self.teacher_forward = needs("needs_hidden") or needs("needs_attention")
        self.cache = self._cache_logits() if needs("needs_teacher_logits") and \
            not self.teacher_forward else None
        self.optimizer = adamw(self.module.parameters(), lr=d.lr, weight_decay=d.weight_decay)
        self.scheduler = linear_warmup_decay(self.optimizer, d.steps, d.warmup_ratio)
        self.step = 0
        self.history: List[dict] = []
        self._values: Optional[torch.Tensor] = None     # the last step's term values [K]
        self._resumed = False

    # --------------------------------------------------------------------------- teacher side
    @torch.no_grad()
    def _teacher_pass(self, out_of: Callable[[ClassifierOutput], torch.Tensor], **kw) -> torch.Tensor:
        """Collective: `out_of(teacher output)` for every training example, in index order; the
        batches are shared out over the ranks and gathered  # [N, ...] (CPU)"""
        src = self.teacher_sources
        batches = list(src.in_order(self.d.eval_batch_size))
        mine = {i: out_of(self.teacher(**src.inputs(idx, self.env.device), **kw)).float().cpu()
                for i, idx in enumerate(batches) if i % self.env.world_size == self.env.rank}
        merged = {}
        for part in all_gather_objects(mine):
            merged.update(part)
        return torch.cat([merged[i] for i in range(len(batches))])

    def _cache_logits(self) -> torch.Tensor:
        """The teacher's logits for every training example  # [N, C] (CPU)"""
        logits = self._teacher_pass(lambda out: out.logits)
        logger.info("teacher logits cached for %d training examples", len(self.sources))
        return logits

    def _build_memory(self, student_dim: int, k: int) -> CentroidMemory:
        """FSD's train_memory step: k-means of the teacher's last-layer [CLS] features."""
        feats = self._teacher_pass(lambda out: out.features[0], layer_index=[-1])
        memory = CentroidMemory.build(feats, k, student_dim,
                                      derive_seed(self.cfg.run.seed, "centroids"))
        logger.info("centroid memory: %d teacher centroids", memory.teacher.shape[0])
        return memory.to(self.env.device)

    def _teacher_inputs(self, inputs: dict, idx: torch.Tensor) -> dict:
        """The batch as the teacher reads it (its own tokens of the same rows, when they differ)."""
        if self.teacher_sources is self.sources:
            return inputs
        return self.teacher_sources.inputs(idx, self.env.device)

    def _teacher_outputs(self, inputs: dict, idx: torch.Tensor) -> ClassifierOutput:
        if self.teacher_forward:
            with torch.no_grad():
                return self.teacher(**self._teacher_inputs(inputs, idx),
                                    output_hidden_states=self.module.need_hidden,
                                    output_attentions=self.module.need_attention)
        return ClassifierOutput(self.cache[idx].to(self.env.device) if self.cache is not None
                                else None)

    # ------------------------------------------------------------------------------ the loss
    def loss_fn(self, model: nn.Module, inputs: dict, labels: torch.Tensor, idx: torch.Tensor
                ) -> torch.Tensor:
        traj = (self.trajectory.logits(self.step, self._teacher_inputs(inputs, idx))
                if self.trajectory is not None else None)
        ctx = KDContext(None, self._teacher_outputs(inputs, idx), labels, inputs["attention_mask"],
                        self.multilabel, None, self.teacher, None, self.memory, traj,
                        gather_rows if self.env.world_size > 1 else (lambda t: t))
        total, self._values = model(inputs, ctx, self.active_terms())
        return total

    def active_terms(self) -> Active:
        """Each term with its layer pairs switched on at this step (None: all off) and its weight
        (feature_warmup ramps every loss but the logit losses)."""
        ramp = 1.0
        if self.d.feature_warmup > 0:
            ramp = min(1.0, (self.step + 1) / (self.d.feature_warmup * self.d.steps))
        top = self.active_student_layer()
        out: Active = []
        for term in self.terms:
            pairs: Optional[Pairs] = term.pairs
            if term.trait("uses_layer_map") and top is not None:
                pairs = [(t, s) for t, s in term.pairs if s <= top] or None
            out.append((term, pairs, term.weight * (1.0 if term.trait("is_logit_loss") else ramp)))
        return out

    def active_student_layer(self) -> Optional[int]:
        """progressive 'layerwise': the highest student hidden-state index whose layer losses are
        on at this step (1, 2, ... over the first progressive_fraction of the steps); None: all."""
        if self.d.progressive != "layerwise":
            return None
        n = self.module.student.num_layers
        span = self.d.progressive_fraction * self.d.steps
        return n if self.step >= span else min(n, 1 + int(self.step * n / span))

    def wrapped(self) -> nn.Module:
        """The module the trainer calls: DDP over the ranks. find_unused_parameters: a term that
        is off, or a real batch beside synthetic ones, leaves some parameters without a gradient;
        device_ids None: the module and the inputs are on this rank's device already (DDP leaves
        the loss context, which holds non-tensors, as it is)."""
        if self.env.world_size < 2:
            return self.module
        return DistributedDataParallel(self.module, device_ids=None, find_unused_parameters=True)

    # --------------------------------------------------------------------------------- train
    def train(self, desc: str = "distill") -> None:
        """Train to `distill.steps`, resuming from the newest complete checkpoint in out_dir."""
        self.resume()
        if self.step >= self.d.steps:
            logger.info("%s: already trained (%d steps)", desc, self.step)
            return
        bf16 = uses_bf16(self.d.precision, self.env.device)
        logger.info("%s: steps %d-%d, %s", desc, self.step + 1, self.d.steps,
                    "bf16 autocast (loss terms in fp32)" if bf16 else "fp32")
        batches = global_batches(self.sources, self.d.batch_size, derive_seed(self.cfg.run.seed, desc))
        batches = rank_slice(itertools.islice(batches, self.step, self.d.steps), self.env.rank,
                             self.env.world_size)

        def on_step(_: int, loss: float) -> dict:
            self.step += 1
            parts = dict(zip((t.label for t in self.terms), self._values.tolist()))  # one sync
            self.history.append({"step": self.step, "loss": loss, **parts,
                                 "lr": self.optimizer.param_groups[0]["lr"]})
            tracking.current().log_record(f"distill/{desc}", self.step, self.history[-1])
            if self.step % max(1, self.d.steps // 10) == 0 or self.step == self.d.steps:
                logger.info("%s step %d/%d  loss %.4f  %s", desc, self.step, self.d.steps, loss,
                            "  ".join(f"{k} {v:.4f}" for k, v in parts.items()))
            if self.step % self.d.save_every == 0 or self.step == self.d.steps:
                self.save()
            return {}

        train_steps(self.wrapped(), self.sources, batches, self.optimizer, self.env.device,
                    self.loss_fn, self.scheduler, total=self.d.steps - self.step,
                    show_progress=self.env.is_main, desc=desc, on_step=on_step, bf16=bf16)

    # --------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "step": self.step,
                "module": {k: v.cpu() for k, v in self.module.state_dict().items()},
                "memory": ({k: v.cpu() for k, v in self.memory.state_dict().items()}
                           if self.memory is not None else None),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "history": self.history, "world_size": self.env.world_size}

    def save(self) -> None:
        """Collective: every rank's RNG to rank 0, which writes the checkpoint."""
        rngs = gather_objects_to_main(rng_state())
        if self.env.is_main:
            save_checkpoint({**self.state_dict(), "rng": rngs, "settings": self.settings},
                            self.out_dir, self.step)

    def resume(self) -> None:
        """Collective, once: restore the newest loadable checkpoint of out_dir (refused when it was
        made with other settings)."""
        if self._resumed:
            return
        self._resumed = True
        if self.cfg.run.resume == "never" and self.env.is_main:
            set_aside(self.out_dir)

        found = main_then_broadcast(lambda: resumable_state(self.out_dir, self.settings))
        if not found:
            return
        path, state = found
        self.module.load_state_dict(state["module"])
        if self.memory is not None and state["memory"] is not None:
            self.memory.load_state_dict(state["memory"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.history = int(state["step"]), list(state["history"])
        if state["world_size"] == self.env.world_size:
            set_rng_state(state["rng"][self.env.rank])
        else:
            seed_everything(derive_seed(self.cfg.run.seed, "resume", self.step, self.env.rank))
        logger.info("resumed from %s (step %d)", path, self.step)
