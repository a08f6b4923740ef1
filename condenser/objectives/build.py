"""From `condense.objectives` (or the `method` preset) to the terms the condenser runs.

The presets (`condense.method`, used when `condense.objectives` is empty):

    ncfm:        [feature_match, calibration]
    trajectory:  [trajectory, calibration]
    combined:    [feature_match, trajectory, calibration]

each term with weight 1 and default options, unless `condense.objectives` also lists a term of
that name: then the preset's term takes that entry's weight and options (`objective_specs`).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence

from condenser.expert_pool import ExpertPool
from condenser.objectives import calibration, feature_match, trajectory  # noqa: F401 (register)
from condenser.objectives.base import OBJECTIVES, Objective, ObjectiveContext
from NCFM import METRICS
from utils.config_schema import Config, ObjectiveSpec
from utils.data import TokenizedSplit
from utils.distributed import DistEnv
from utils.errors import UserError
from utils.precision import resolve_precision

logger = logging.getLogger(__name__)

PRESETS: Dict[str, List[str]] = {"ncfm": ["feature_match", "calibration"],
                                 "trajectory": ["trajectory", "calibration"],
                                 "combined": ["feature_match", "trajectory", "calibration"]}
DEFAULT_PRESET = "ncfm"


def objective_specs(cfg: Config) -> List[ObjectiveSpec]:
    """`condense.objectives` as written; or, with `method` set (or neither set: ncfm), the
    preset's terms, each taking its weight and options from the first `objectives` entry of its
    name (default ones without): `--set condense.method=trajectory` on a config whose list tunes
    calibration keeps that tuning. Listed terms outside the preset are left out (logged)."""
    c = cfg.condense
    if c.method is None and c.objectives:
        return list(c.objectives)
    names = PRESETS[c.method or DEFAULT_PRESET]
    listed = {}
    for spec in c.objectives:
        listed.setdefault(spec.name, spec)
    left_out = [s.name for s in c.objectives if s.name not in names]
    if left_out:
        logger.warning("condense.method %s: the listed objectives %s are not in the preset %s "
                       "and are left out", c.method, left_out, names)
    return [listed.get(name) or ObjectiveSpec(name, 1.0, OBJECTIVES.options(name)) for name in names]


def objective_context(cfg: Config, env: DistEnv, pool: ExpertPool, train: TokenizedSplit,
                      classes: Sequence[int], my_classes: Sequence[int]) -> ObjectiveContext:
    """The runtime context every term receives (the run-level settings it may read)."""
    c = cfg.condense
    return ObjectiveContext(env, pool, train, list(classes), list(my_classes), cfg.run.seed,
                            cfg.dataset.is_multilabel, resolve_precision(c.precision, env.device),
                            c.ipc, c.factor, c.decode_type, cfg.dataset.batch_real,
                            cfg.pretrain.epochs, tuple(c.interp_range), c.lam_grid)


def _entry(spec: ObjectiveSpec, where: str):
    if spec.name not in OBJECTIVES and spec.name in METRICS:
        raise UserError(f"{where}: {spec.name!r} is a distribution metric, not an objective: use "
                        f"{{name: feature_match, options: {{metric: {spec.name}}}}}")
    return OBJECTIVES.entry(spec.name, where=where)


def unique_keys(terms: List[Objective]) -> None:
    """Give a repeated record key (two feature-matching terms) a number: match_loss,
    match_2_loss, ... (in the order of condense.objectives)."""
    seen: Dict[str, int] = {}
    for term in terms:
        key = term.metric_key
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            term.metric_key = f"{key[:-len('_loss')]}_{seen[key]}_loss" if key.endswith("_loss") \
                else f"{key}_{seen[key]}"


def build_objectives(ctx: ObjectiveContext, specs: List[ObjectiveSpec]) -> List[Objective]:
    """The terms of `specs`, each with its validated options; an unknown name or option is a
    UserError naming condense.objectives[i]."""
    entries = [_entry(s, f"condense.objectives[{i}]") for i, s in enumerate(specs)]
    if any(e.trait("needs_eager_attention") for e in entries):
        ctx.pool.use_eager_attention()
    terms = []
    for i, (spec, entry) in enumerate(zip(specs, entries)):
        options = OBJECTIVES.options(spec.name, spec.options,
                                     where=f"condense.objectives[{i}].options")
        term = entry.obj(ctx, spec.weight, options)
        if not term.metric_key.endswith("_loss"):     # a term that names no key logs as <name>_loss
            term.metric_key = f"{spec.name}_loss"
        terms.append(term)
    unique_keys(terms)
    return terms
