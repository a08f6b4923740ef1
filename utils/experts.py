"""Expert classifiers: their on-disk layout, training (seed-parallel across ranks) and loading.

Layout of one expert set (`expert_set_dir(cfg)`):

    <pretrain.expert_dir>/<dataset>/<model>-len<max_length>-<fingerprint hash>/
        expert_<k>/                   k = 0 .. num_premodel-1, trained with seed pretrain.seed + k
            epoch_0.safetensors       initial weights (pretrained encoder + fresh head)
            epoch_<e>.safetensors     weights after epoch e = 1 .. pretrain.epochs
            train_state.pt            optimiser, scheduler and RNG after the last finished epoch
            manifest.json             written after every epoch, last of all; "complete": true
                                      only when every epoch is saved (the marker)

NCFM samples `model_init` (epoch_0), `model_final` (epoch_<epochs>) and interpolations between
them; trajectory matching replays the epochs in between. Re-running skips complete experts and
resumes half-done ones from their last finished epoch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from utils.config import config_to_dict
from utils.config_schema import ADDED_LATER, Config
from utils.data import TokenizedSplit, training_data_hash
from utils.distributed import DistEnv, barrier, main_then_broadcast, shard_range
from utils.errors import UserError
from utils.io import (
    ArtifactError,
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_json,
    load_safetensors,
    read_json,
    safe_torch_load,
)
from utils.model import TextClassifier, build_classifier, model_tag, resolve_pooling
from utils.precision import resolve_precision, this_machine, uses_bf16
from utils.readers import DataError
from utils.seeding import rng_state, seed_everything, set_rng_state
from utils.training import (
    Examples,
    adamw,
    epoch_batches,
    evaluate_classifier,
    label_loss_fn,
    length_grouped_batches,
    linear_warmup_decay,
    train_steps,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class ExpertError(UserError):
    """Experts are missing or were trained with other settings; the message says what to do."""


def dataset_tag(cfg: Config) -> str:
    name = cfg.dataset.name
    return Path(name).name if ("/" in name and Path(name).exists()) else name.replace("/", "--")


def expert_set_dir(cfg: Config) -> Path:
    """The folder of the experts this config asks for; its last part ends in the fingerprint hash,
    so changing any expert-shaping setting trains a new set instead of reusing a stale one."""
    return (Path(cfg.pretrain.expert_dir) / dataset_tag(cfg)
            / f"{model_tag(cfg.network)}-len{cfg.dataset.max_length}-{fingerprint_hash(cfg)}")


def expert_dir(root: Path, k: int) -> Path:
    return root / f"expert_{k}"


def weights_path(root: Path, k: int, epoch: int) -> Path:
    return expert_dir(root, k) / f"epoch_{epoch}.safetensors"


# Config keys that never change an expert's weights: where files go, evaluation batch sizes, the
# number of experts (expert k is the same whatever their count) and what later stages do. Every
# OTHER key of the dataset, network and pretrain sections is part of the fingerprint, so a new key
# is covered unless it is listed here on purpose.
NOT_SHAPING = {
    "dataset": {"batch_real", "cache_dir", "max_test_per_class", "at_least_one_label"},  # scoring
    "network": {"layer_index"},
    "pretrain": {"expert_dir", "eval_batch_size", "num_premodel"},
}




def fingerprint(cfg: Config) -> dict:
    """Every setting that shapes an expert (derived from the config sections, not listed by hand);
    experts with another fingerprint live in another folder and are never mixed."""
    full = config_to_dict(cfg)
    full["network"]["pooling"] = resolve_pooling(cfg.network)      # 'auto' = what it resolves to
    full["pretrain"]["precision"] = resolve_precision(cfg.pretrain.precision, this_machine())
    out = {section: {k: v for k, v in full[section].items() if k not in skip
                     and ADDED_LATER.get(f"{section}.{k}", object()) != v}
           for section, skip in NOT_SHAPING.items()}
    # `dataset.path` is the newer spelling of `data_dir`: one location, one fingerprint key; a
    # local folder counts by its real path, so another checkout beside the same data (or
    # `a/../data` vs `data`) finds the same experts
    location = out["dataset"].pop("path", None) or out["dataset"]["data_dir"]
    if location and os.path.exists(location):
        location = os.path.realpath(location)
    out["dataset"]["data_dir"] = location
    # what the experts learn from, not only where it lives: a data file edited in place trains
    # new experts (unreadable data: left out here; loading the data then reports the problem)
    try:
        out["dataset"]["content_sha256"] = training_data_hash(cfg.dataset)
    except DataError:
        pass
    return out


def fingerprint_hash(cfg: Config) -> str:
    text = json.dumps(fingerprint(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def read_manifest(root: Path, k: int) -> Optional[dict]:
    path = expert_dir(root, k) / MANIFEST
    return read_json(path) if path.is_file() else None


def check_fingerprint(manifest: dict, cfg: Config, root: Path, k: int) -> None:
    want = fingerprint(cfg)
    have = manifest.get("fingerprint", {})
    diff = {f"{sec}.{key}": (have.get(sec, {}).get(key), want[sec][key])
            for sec in want for key in want[sec] if have.get(sec, {}).get(key) != want[sec][key]}
    if diff:
        details = ", ".join(f"{k_}: saved {a!r} vs config {b!r}" for k_, (a, b) in diff.items())
        raise ExpertError(f"{expert_dir(root, k)} was trained with other settings ({details}). "
                          f"Remove that folder or choose another --set pretrain.expert_dir.")


def missing_experts(cfg: Config) -> List[int]:
    root = expert_set_dir(cfg)
    out = []
    for k in range(cfg.pretrain.num_premodel):
        m = read_manifest(root, k)
        if m is not None:
            check_fingerprint(m, cfg, root, k)
        if m is None or not m.get("complete"):
            out.append(k)
    return out


def _write_manifest(root: Path, k: int, cfg: Config, epochs_done: int, history: list,
                    complete: bool, seconds: float) -> None:
    atomic_write_json(expert_dir(root, k) / MANIFEST, {
        "expert": k, "seed": cfg.pretrain.seed + k, "complete": complete,
        "epochs_done": epochs_done, "epochs": cfg.pretrain.epochs,
        "history": history,  # per epoch: train_loss, test accuracy/F1
        "train_seconds": round(seconds, 1), "fingerprint": fingerprint(cfg),
        "files": {"init": "epoch_0.safetensors",
                  "final": f"epoch_{cfg.pretrain.epochs}.safetensors"},
        "config": config_to_dict(cfg)})


def train_expert(k: int, cfg: Config, train: TokenizedSplit, test: TokenizedSplit,
                 nclass: int, device: torch.device, show_progress: bool) -> dict:
    """Train (or finish) expert k; returns its manifest."""
    root = expert_set_dir(cfg)
    p = cfg.pretrain
    seed = p.seed + k
    manifest = read_manifest(root, k) or {}
    if manifest:
        check_fingerprint(manifest, cfg, root, k)
    if manifest.get("complete"):
        return manifest
    done = int(manifest.get("epochs_done", 0))
    history = list(manifest.get("history", []))
    seconds = float(manifest.get("train_seconds", 0.0))
    resume = None
    if done > 0:
        try:
            resume = (load_safetensors(weights_path(root, k, done)),
                      safe_torch_load(expert_dir(root, k) / "train_state.pt"))
            if int(resume[1].get("epoch", -1)) != done:       # the optimiser of another epoch
                raise ArtifactError(f"train_state.pt is of epoch {resume[1].get('epoch')}, the "
                                    f"manifest says {done}")
        except ArtifactError as exc:
            logger.warning("expert %d cannot resume after epoch %d (%s): training it from the "
                           "start", k, done, exc)
            done, history, seconds = 0, [], 0.0

    seed_everything(seed)
    examples = Examples.of(train)
    loss_fn = label_loss_fn(multilabel=train.labels.dim() == 2)   # 2-D real labels: multi-label
    model: TextClassifier = build_classifier(cfg.network, nclass, pretrained=done == 0).to(device)
    optimizer = adamw(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    steps = p.epochs * -(-len(train) // p.batch_size)
    scheduler = linear_warmup_decay(optimizer, steps, p.warmup_ratio)
    if done == 0:
        atomic_save_safetensors(model.state_dict(), weights_path(root, k, 0))
        _write_manifest(root, k, cfg, 0, history, False, seconds)
    else:
        logger.info("expert %d: resuming after epoch %d", k, done)
        weights, state = resume
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])

    per_epoch = -(-len(train) // p.batch_size)
    bf16 = uses_bf16(p.precision, device)
    logger.info("expert %d: %d epochs x %d steps (%d rows, batch %d, %s); progress lines give the "
                "rate and ETA", k, p.epochs - done, per_epoch, len(train), p.batch_size,
                "bf16 autocast" if bf16 else "fp32")
    for epoch in range(done + 1, p.epochs + 1):
        start = time.time()
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)  # data order of this epoch
        batches = length_grouped_batches(train.attention_mask.sum(1), p.batch_size, gen) \
            if p.group_by_length else epoch_batches(len(train), p.batch_size, gen)
        loss = train_steps(model, examples, batches, optimizer,
                           device, loss_fn, scheduler, total=-(-len(train) // p.batch_size),
                           show_progress=show_progress, desc=f"expert {k} epoch {epoch}/{p.epochs}",
                           track=f"expert_{k}", track_start=(epoch - 1) * per_epoch, bf16=bf16)
        scores = evaluate_classifier(model, test, p.eval_batch_size, device,
                                     cfg.dataset.at_least_one_label, bf16)
        seconds += time.time() - start
        history.append({"epoch": epoch, "train_loss": round(loss, 5),
                        **{name: round(v, 5) for name, v in scores.items()}})
        atomic_save_safetensors(model.state_dict(), weights_path(root, k, epoch))
        atomic_torch_save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                           "rng": rng_state(), "epoch": epoch}, expert_dir(root, k) / "train_state.pt")
        _write_manifest(root, k, cfg, epoch, history, epoch == p.epochs, seconds)
        logger.info("expert %d epoch %d/%d: train loss %.4f, test accuracy %.4f (%.0fs)",
                    k, epoch, p.epochs, loss, scores["accuracy"], time.time() - start)
    return read_manifest(root, k)


def train_experts(cfg: Config, env: DistEnv, train: TokenizedSplit, test: TokenizedSplit,
                  nclass: int) -> Dict[int, dict]:
    """Seed-parallel expert training: rank r trains its balanced share of the experts.

    Each expert's files are written by the one rank that owns it. Every rank returns after a
    barrier, when all experts are complete. (Across several nodes without a shared file system,
    copy `expert_set_dir` to every node before condensation.)
    """
    main_then_broadcast(lambda: verify_experts(cfg))
    mine = list(shard_range(cfg.pretrain.num_premodel, env.world_size, env.rank))
    logger.info("experts in %s; rank %d trains experts %s", expert_set_dir(cfg), env.rank, mine)
    results = {}
    for k in mine:
        results[k] = train_expert(k, cfg, train, test, nclass, env.device, env.is_main)
    barrier()
    return results


def verify_experts(cfg: Config) -> List[int]:
    """Rank 0: check every weights file of the complete experts against the checksum stored in
    it; an expert with a damaged or missing file is marked unfinished (a warning names the file)
    so that it is trained again. Returns the experts so marked."""
    root = expert_set_dir(cfg)
    bad = []
    for k in range(cfg.pretrain.num_premodel):
        m = read_manifest(root, k)
        if not m or not m.get("complete"):
            continue
        for epoch in range(int(m.get("epochs", cfg.pretrain.epochs)) + 1):
            path = weights_path(root, k, epoch)
            try:
                load_safetensors(path)
            except ArtifactError as exc:
                logger.warning("expert %d: %s; training expert %d again", k, exc, k)
                _write_manifest(root, k, cfg, 0, [], False, 0.0)
                bad.append(k)
                break
    return bad


def expert_summary(cfg: Config) -> List[dict]:
    root = expert_set_dir(cfg)
    rows = []
    for k in range(cfg.pretrain.num_premodel):
        m = read_manifest(root, k)
        if m:
            last = m["history"][-1] if m["history"] else {}
            rows.append({"expert": k, "complete": m["complete"], "epochs_done": m["epochs_done"],
                         "test_accuracy": last.get("accuracy"), "seconds": m["train_seconds"]})
    return rows


def load_expert_weights(cfg: Config, k: int, epoch: int) -> Dict[str, torch.Tensor]:
    """State dict of expert k after `epoch` (0 = initial); the expert must be complete."""
    root = expert_set_dir(cfg)
    m = read_manifest(root, k)
    if m is None or not m.get("complete"):
        raise ExpertError(f"expert {k} in {root} is missing or incomplete; run "
                          f"condense/pretrain_script_text.py with the same config first")
    check_fingerprint(m, cfg, root, k)
    return load_safetensors(weights_path(root, k, epoch))


def ensure_experts(cfg: Config, env: DistEnv, data) -> None:
    """Collective: train the experts this config needs if any is missing or unfinished (stage 1);
    `data` is the loaded dataset (`utils.runtime.Data`)."""
    main_then_broadcast(lambda: verify_experts(cfg))
    missing = missing_experts(cfg)
    if missing:
        logger.warning("experts %s are missing or unfinished in %s: training them first (stage 1)",
                       missing, expert_set_dir(cfg))
        train_experts(cfg, env, data.train, data.test, data.dataset.nclass)
