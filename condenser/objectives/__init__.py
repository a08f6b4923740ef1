"""The terms of the condensation loss (`condense.objectives: [{name, weight, options}]`).

base            the Objective interface, its runtime context, the OBJECTIVES registry
feature_match   distribution matching of pooled features (NCFM by default)
calibration     label-loss steps of their own after the joint step
trajectory      trajectory matching (its unrolls: condenser.trajectory)
build           the `method` presets and the terms of a run

The condenser runs every iteration as a loop over the terms:

    for term in joint terms:  term.backward(it, shard)       # weight * gradient into the data
    for term in joint terms:  term.before_step(it)           # e.g. the sampling net's ascent
    optimiser step;  term.after_step() for every joint term   # e.g. syn_lr's own step
    for term with own_steps:  own_steps x (zero_grad; term.backward; optimiser step)
"""
from condenser.objectives.base import (
    OBJECTIVES,
    Objective,
    ObjectiveContext,
    cls_features,
    register_objective,
)
from condenser.objectives.build import (
    PRESETS,
    build_objectives,
    objective_context,
    objective_specs,
)
from condenser.objectives.calibration import Calibration, CalibrationOptions
from condenser.objectives.feature_match import FeatureMatching, FeatureMatchOptions, RealFeatureCache
from condenser.objectives.trajectory import TrajectoryObjective, TrajectoryOptions
from utils.precision import autocast  # the bf16 context the objectives use (utils.precision)

__all__ = ["OBJECTIVES", "PRESETS", "Calibration", "CalibrationOptions", "FeatureMatchOptions",
           "FeatureMatching", "Objective", "ObjectiveContext", "RealFeatureCache",
           "TrajectoryObjective", "TrajectoryOptions", "autocast", "build_objectives", "cls_features",
           "objective_context", "objective_specs", "register_objective"]
