"""Stage 4 - distill: compress a teacher into a smaller student on real data, a synthetic set, or both.

    torchrun --nproc_per_node=2 condense/distill_script_text.py --config_path=config/distill/bbc.yaml \
        [--load_path results/condense/.../syn_data_<iter>.pth] [--set distill.data=synthetic|real|both]

The teacher is expert `distill.teacher_expert` of stage 1 (trained first if missing) or a BERT /
MPNet classifier folder (`distill.teacher_path`). The student (`distill.student_layers`, default 3)
starts from the teacher's layers, or from a pretrained encoder of its own (`distill.student_path`,
e.g. MiniLM under an MPNet teacher: each model reads the text with its own tokenizer), and trains
`distill.steps` steps with the loss mix `distill.losses`
(distiller/losses.py). With `distill.baseline`, the same student is also trained without a teacher
(label_ce only, same steps, seeds and data). Re-running the same command resumes.

Outputs under --output_dir (default results/distill/<dataset>/ipc<ipc>/<run_name>/): student/ (a
Hugging Face model folder: AutoModelForSequenceClassification.from_pretrained loads it),
distill/results.json (teacher, student, no-teacher student, int8 student: accuracy, macro-F1,
parameters, size, CPU latency), distill/history.json, kd/ and no_teacher/ checkpoints, print.log,
args.log; rows appended to `distill.results_table` (default results/distill.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from distiller.data import Sources, make_sources
from distiller.distill import Distiller, TrajectoryTeacher, resumable_state
from distiller.losses import any_trait, loss_entries, shared_option
from distiller.report import (
    append_table,
    int8_backend,
    latency_batch,
    loss_names,
    measure,
    quantize_int8,
    relative_to_teacher,
)
from distiller.student import (
    build_student,
    count_parameters,
    load_hf_classifier,
    load_pretrained_student,
    save_student,
    teacher_token_states,
)
from utils.checkpoint import settings_view
from utils.config import config_to_dict
from utils.config_schema import CondenseConfig, Config, KDLossSpec
from utils.distributed import barrier, main_then_broadcast
from utils.errors import UserError
from utils.experts import ensure_experts, load_expert_weights
from utils.io import atomic_write_json
from utils.model import build_classifier, freeze
from utils.runtime import Data, guarded_stage, load_data, start_run
from utils.seeding import derive_seed, seed_everything
from utils.synset import check_fits, load_synset, to_examples
from utils.tracking import Tracker
from utils.training import Examples

logger = logging.getLogger("distill")


def load_teacher(cfg: Config, env, data: Data, eager: bool):
    """(teacher, trajectory teacher or None): expert k's final weights, or a classifier folder."""
    d, nclass = cfg.distill, data.dataset.nclass
    if d.teacher_path:
        return freeze(load_hf_classifier(d.teacher_path, eager).to(env.device)), None
    if d.teacher_expert >= cfg.pretrain.num_premodel:
        raise UserError(f"distill.teacher_expert = {d.teacher_expert} but there are only "
                        f"{cfg.pretrain.num_premodel} experts (pretrain.num_premodel)")
    ensure_experts(cfg, env, data)

    def weights(epoch: int) -> dict:
        return load_expert_weights(cfg, d.teacher_expert, epoch)

    def frozen_expert(epoch: int):
        model = build_classifier(cfg.network, nclass, pretrained=False, eager_attention=eager,
                                 vocab_size=data.tokenizer.vocab_size)
        model.load_state_dict(weights(epoch))
        return freeze(model.to(env.device))

    teacher = frozen_expert(cfg.pretrain.epochs)
    trajectory = None
    if any_trait(d.losses, "needs_trajectory"):
        points = list(shared_option(d.losses, "needs_trajectory", "trajectory_points")
                      or range(1, cfg.pretrain.epochs + 1))
        if not all(0 <= p <= cfg.pretrain.epochs for p in points):
            raise UserError(f"distill.losses: trajectory_points {points}: the expert has epochs "
                            f"0..{cfg.pretrain.epochs}")
        trajectory = TrajectoryTeacher(frozen_expert(points[0]), points, weights, d.steps)
    return teacher, trajectory


def read_synthetic(cfg: Config, data: Data) -> Optional[dict]:
    """The synthetic set distill.data asks for, read and checked against the data's classes before
    the teacher is loaded or trained (None for real data; a set given with real data is refused,
    not silently ignored)."""
    path = cfg.condense.load_path
    if cfg.distill.data == "real":
        if path:
            raise UserError(f"a synthetic set was given ({path}) but distill.data is 'real', which "
                            f"would not use it: add --data synthetic (the set alone) or --data "
                            f"both (the set and the real data), or drop --load_path")
        return None
    if not path:
        raise UserError(f"distill.data = {cfg.distill.data!r} needs a synthetic set: --load_path "
                        f"results/condense/.../distilled_data/syn_data_<iter>.pth")
    syn = load_synset(path)
    check_fits(syn, path, class_names=data.dataset.class_names)
    return syn


def synthetic_examples(cfg: Config, syn: Optional[dict], hidden: int) -> Optional[Examples]:
    """The set as training examples, once the teacher's hidden size is known."""
    if syn is None:
        return None
    check_fits(syn, cfg.condense.load_path, hidden_size=hidden,
               hidden_hint=" (the teacher's; distil with the model the set was condensed with)")
    return to_examples(syn)


@dataclasses.dataclass
class ModelText:
    """One model's reading of the data: its tokenizer and both splits in its tokens."""
    tokenizer: object
    train: Examples
    test: Examples

    def same_tokens(self, other: "ModelText") -> bool:
        """Both read every row as the same token ids (token-level losses are then meaningful)."""
        return all(a.input_ids.shape == b.input_ids.shape and torch.equal(a.input_ids, b.input_ids)
                   and torch.equal(a.attention_mask, b.attention_mask)
                   for a, b in ((self.train, other.train), (self.test, other.test)))


@dataclasses.dataclass
class Readings:
    teacher: ModelText
    student: ModelText
    own_tokens: bool            # the student reads other token ids than the teacher


def folder_tokenizer(path: str, key: str, fallback=None):
    """The tokenizer of a model folder / alias / hub name (`key` names the setting in errors);
    `fallback` when the folder has none (with a warning)."""
    from utils.model import ModelError, tokenizer_at
    try:
        return tokenizer_at(path, key)
    except ModelError as exc:
        if fallback is None:
            raise
        logger.warning("%s; it reads the ids of network.model_path's tokenizer", exc)
        return fallback


def readings(cfg: Config, data: Data) -> Readings:
    """How teacher and student read the text: each through its own tokenizer (an expert and a
    student cut from the teacher read the network's). Refused here, before any work: a student of
    its own on synthetic data, token-level losses across tokenizers, a synthetic set for a teacher
    that reads other tokens than the model that made it."""
    from utils.data import tokenize_dataset

    d = cfg.distill
    base = ModelText(data.tokenizer, Examples.of(data.train), Examples.of(data.test))

    def read(tok) -> ModelText:
        if tok is data.tokenizer:
            return base
        train, test = tokenize_dataset(data.dataset, tok, cfg.dataset.max_length,
                                       cfg.dataset.cache_dir)
        return ModelText(tok, Examples.of(train), Examples.of(test))

    teacher = read(folder_tokenizer(d.teacher_path, "distill.teacher_path", data.tokenizer)) \
        if d.teacher_path else base
    if d.student_path and d.data != "real":
        raise UserError(f"distill.student_path trains on real text; distill.data = {d.data!r} "
                        f"needs a student cut from the teacher (a synthetic set lives in the "
                        f"embedding space of the model that made it): drop student_path or use "
                        f"--data real")
    if d.data != "real" and teacher is not base and not teacher.same_tokens(base):
        raise UserError(f"distill.teacher_path {d.teacher_path!r} reads other token ids than "
                        f"network.model_path, the model whose embedding space the synthetic set "
                        f"lives in; distil a synthetic set with that model's teacher")
    student = read(folder_tokenizer(d.student_path, "distill.student_path")) \
        if d.student_path else teacher
    own = student is not teacher and not student.same_tokens(teacher)
    aligned = [e.name for e, _ in loss_entries(d.losses) if e.trait("aligns_tokens")]
    if own and aligned:
        raise UserError(f"distill.losses {aligned} compare teacher and student token by token, but "
                        f"the student ({d.student_path}) reads other token ids than the teacher; "
                        f"use logit losses (logit_kd, label_ce) or [CLS]-level ones (cka_local, "
                        f"cka_global)")
    if d.student_path:
        weights = [e.name for e, _ in loss_entries(d.losses) if e.trait("matches_weights")]
        if weights:
            raise UserError(f"distill.losses {weights} match the student's weights to the "
                            f"teacher's, which a pretrained student of its own "
                            f"(distill.student_path) does not share; drop them or the student_path")
    return Readings(teacher, student, own)


# Settings a resumed distillation may change; every other key shapes the student and must match.
RESUMABLE_CHANGES = ("distill.save_every", "distill.baseline", "distill.quantize",
                     "distill.int8_backend",
                     "distill.latency_batch", "distill.latency_repeats", "distill.eval_batch_size",
                     "distill.results_table", "evaluate.*", "optimization.*", "dataset.cache_dir",
                     "dataset.max_test_per_class", "dataset.at_least_one_label", "dataset.batch_real",
                     "pretrain.expert_dir",
                     "pretrain.eval_batch_size", "run.output_dir", "run.run_name",
                     "run.log_level", "run.gpu", "run.tf32", "run.resume", "run.report_to")
# the no-teacher student does not depend on the teacher's loss mix
NO_TEACHER_IGNORES = ("distill.losses", "distill.feature_warmup", "distill.progressive",
                      "distill.progressive_fraction")


def resume_settings(cfg: Config, baseline: bool) -> dict:
    condense_keys = [f"condense.{f.name}" for f in dataclasses.fields(CondenseConfig)
                     if f.name != "load_path"]
    allowed = [*RESUMABLE_CHANGES, *condense_keys, *(NO_TEACHER_IGNORES if baseline else ())]
    return settings_view(config_to_dict(cfg), allowed)


def check_folder(cfg: Config, run) -> None:
    """Collective, before the teacher is loaded (or its experts trained): a folder holding a
    student of another run is refused now, not after that work."""
    if cfg.run.resume == "never":
        return
    parts = [("kd", False)] + ([("no_teacher", True)] if cfg.distill.baseline else [])

    def check() -> None:                         # rank 0 reads; its refusal reaches every rank
        for sub, baseline in parts:
            resumable_state(run.out_dir / sub, resume_settings(cfg, baseline))
    main_then_broadcast(check)


def train_student(run, teacher, trajectory, data, sources, specs, out: Path, desc: str,
                  baseline: bool = False, teacher_sources: Optional[Sources] = None):
    """A fresh student (identical start for every call) trained with `specs`."""
    cfg, env = run.cfg, run.env
    d = cfg.distill
    eager = any_trait(specs, "needs_attention")
    seed_everything(derive_seed(cfg.run.seed, "student"))
    init_seed = derive_seed(cfg.run.seed, "student-init") % (2 ** 31)
    if d.student_path:
        student = load_pretrained_student(d.student_path, data.dataset.nclass, d, eager, init_seed)
    else:
        states = teacher_token_states(teacher, sources, d.eval_batch_size, env.device) \
            if d.init == "pca" else None
        student = build_student(teacher, data.dataset.nclass, d, eager_attention=eager,
                                seed=init_seed, synthetic_inputs=d.data != "real",
                                pca_states=states)
    student = student.to(env.device)
    distiller = Distiller(cfg, env, teacher, student, sources, data.dataset.multilabel, specs, out,
                          trajectory, teacher.num_layers, resume_settings(cfg, baseline),
                          teacher_sources)
    distiller.resume()               # a folder of another run is refused here, before any work
    if not baseline:
        run.save_args()
    distiller.train(desc)
    return student, distiller


def report(cfg: Config, run, text: Readings, teacher, student, baseline) -> list:
    """Rank 0: every row measured in this process on the test split (each model on its own
    tokens of the same rows; the latency batch is the same rows for all)."""
    d, dev = cfg.distill, run.env.device
    t_test, s_test = text.teacher.test, text.student.test
    t_batch = latency_batch(t_test, d.latency_batch, dev)
    s_batch = latency_batch(s_test, d.latency_batch, dev)
    teacher_params = sum(p.numel() for p in teacher.parameters())
    one = cfg.dataset.at_least_one_label                         # multi-label decisions
    rows = [measure("teacher", teacher, t_test, t_batch, teacher_params, d.eval_batch_size,
                    d.latency_repeats, dev, one),
            measure("student", student, s_test, s_batch, count_parameters(student),
                    d.eval_batch_size, d.latency_repeats, dev, one)]
    if baseline is not None:
        rows.append(measure("student (no teacher)", baseline, s_test, s_batch,
                            count_parameters(baseline), d.eval_batch_size, d.latency_repeats, dev, one))
    if d.quantize and dev.type == "cpu":
        from distiller.student import HFClassifier
        q = HFClassifier(quantize_int8(student.model, d.int8_backend))
        rows.append(measure("student int8", q, s_test, s_batch, count_parameters(student),
                            d.eval_batch_size, d.latency_repeats, dev, one))
    relative_to_teacher(rows)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    run = start_run(argv, __doc__.splitlines()[0], "distill", defer_args_log=True)
    cfg, env = run.cfg, run.env
    with guarded_stage() as stage, contextlib.ExitStack() as stack:
        d = cfg.distill
        loss_entries(d.losses)       # every loss and its options known, before any work
        tracker = stack.enter_context(Tracker.session(cfg, run.out_dir, env))  # run.report_to
        data = load_data(cfg)
        eager = any_trait(d.losses, "needs_attention")
        text = readings(cfg, data)               # refused here, before the teacher is trained
        syn = read_synthetic(cfg, data)          # and a missing or mismatched set
        check_folder(cfg, run)                   # and a folder of another run
        teacher, trajectory = load_teacher(cfg, env, data, eager)
        sources = make_sources(d.data, text.student.train,
                               synthetic_examples(cfg, syn, teacher.hidden_size))
        teacher_sources = make_sources("real", text.teacher.train, None) \
            if text.own_tokens else None
        logger.info("***** Running distillation *****  %s -> %s, data %s (%d examples), %d steps x "
                    "batch %d, losses %s", "teacher_path "
                    + d.teacher_path if d.teacher_path else f"expert {d.teacher_expert}",
                    f"student {d.student_path}" + (" (its own tokenizer)" if text.own_tokens
                                                   else "") if d.student_path
                    else f"{d.student_layers}-layer student (init {d.init})",
                    d.data, len(sources), d.steps, d.batch_size, loss_names(d.losses))
        student, distiller = train_student(run, teacher, trajectory, data, sources, d.losses,
                                           run.out_dir / "kd", "distill",
                                           teacher_sources=teacher_sources)
        baseline = None
        if d.baseline:
            baseline, _ = train_student(run, teacher, None, data, sources,
                                        [KDLossSpec("label_ce", 1.0)], run.out_dir / "no_teacher",
                                        "no-teacher", baseline=True)
        if env.is_main:
            folder = save_student(student, text.student.tokenizer, run.out_dir / "student")
            rows = report(cfg, run, text, teacher, student, baseline)
            tracker.log(d.steps, {f"distill/{r['model']}/accuracy": r["accuracy"] for r in rows})
            context = {"dataset": cfg.dataset.name, "data": d.data, "losses": loss_names(d.losses),
                       "student": Path(d.student_path.rstrip("/")).name if d.student_path
                       else f"L{d.student_layers}"
                       + (f"-H{d.student_hidden}" if d.student_hidden else ""),
                       "steps": d.steps}
            atomic_write_json(run.out_dir / "distill" / "results.json",
                              {**context, "student_folder": str(folder),
                               "int8_backend": int8_backend(d.int8_backend) if d.quantize else None,
                               "rows": rows})
            atomic_write_json(run.out_dir / "distill" / "history.json", distiller.history)
            lines = append_table(Path(d.results_table), rows, context)
            logger.info("results (appended to %s):\n%s", d.results_table, lines)
            logger.info("student saved to %s", folder)
        barrier()
    return stage.exit_code


if __name__ == "__main__":
    sys.exit(main())
