"""Experts kept in memory for condensation, and the models that borrow their weights.

The pool reads each expert's initial and final weights once. Every iteration, `load_interval`
writes `init + lam * (final - init)` into a single reusable model and `load_final` writes the
final weights into another, so no file is read inside the loop.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from utils.config_schema import Config
from utils.experts import load_expert_weights
from utils.model import TextClassifier, build_classifier, freeze
from utils.seeding import derive_seed

logger = logging.getLogger(__name__)


@dataclass
class ExpertChoice:
    """Which expert, and which interpolation, one iteration uses (identical on every rank)."""
    expert: int
    lam: float
    grid_index: Optional[int] = None   # with a lam grid: which grid value lam is


def choose_expert(seed: int, iteration: int, num_experts: int, interp_range: Sequence[float],
                  lam_grid: Optional[int] = None) -> ExpertChoice:
    """The iteration's expert and interpolation factor: uniform over interp_range, or over
    `lam_grid` evenly spaced values of it (ends included; the real-feature cache's keys)."""
    rng = random.Random(derive_seed(seed, "expert", iteration))
    expert, u = rng.randrange(num_experts), rng.random()
    low, high = interp_range
    if not lam_grid:
        return ExpertChoice(expert, low + (high - low) * u)
    i = min(lam_grid - 1, int(u * lam_grid))
    return ExpertChoice(expert, low + (high - low) * i / (lam_grid - 1), i)


class ExpertPool:
    def __init__(self, cfg: Config, nclass: int, device: torch.device):
        self.num = cfg.pretrain.num_premodel
        self.cfg, self.device, self.nclass = cfg, device, nclass
        final_epoch = cfg.pretrain.epochs
        self.init: List[Dict[str, torch.Tensor]] = []
        self.final: List[Dict[str, torch.Tensor]] = []
        for k in range(self.num):
            self.init.append({n: t.to(device) for n, t in load_expert_weights(cfg, k, 0).items()})
            self.final.append({n: t.to(device) for n, t in
                               load_expert_weights(cfg, k, final_epoch).items()})
        self.match_model = self._frozen(cfg, nclass, device)
        self.final_model = self._frozen(cfg, nclass, device)
        self._final_loaded = -1
        self._epochs: Dict[tuple, Dict[str, torch.Tensor]] = {}
        logger.info("expert pool: %d experts (initial and final weights) in memory", self.num)

    @staticmethod
    def _frozen(cfg: Config, nclass: int, device: torch.device, eager: bool = False
                ) -> TextClassifier:
        # frozen: no dropout (matching and calibration are deterministic), no parameter gradients
        return freeze(build_classifier(cfg.network, nclass, pretrained=False,
                                       eager_attention=eager).to(device))

    def use_eager_attention(self) -> None:
        """Rebuild the interval model with eager attention (second-order gradients)."""
        self.match_model = self._frozen(self.cfg, self.nclass, self.device, eager=True)

    @torch.no_grad()
    def load_interval(self, choice: ExpertChoice) -> TextClassifier:
        """model_interval: the expert's weights interpolated between initial and final."""
        init, final = self.init[choice.expert], self.final[choice.expert]
        for name, tensor in self.match_model.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                torch.lerp(init[name], final[name], choice.lam, out=tensor.data)
            else:
                tensor.data.copy_(final[name])
        return self.match_model

    @torch.no_grad()
    def load_final(self, expert: int) -> TextClassifier:
        """model_final: the expert's final weights (used by the calibration loss)."""
        if self._final_loaded != expert:
            self.final_model.load_state_dict(self.final[expert])
            self._final_loaded = expert
        return self.final_model

    def epoch_weights(self, expert: int, epoch: int) -> Dict[str, torch.Tensor]:
        """Expert weights after `epoch` (trajectory matching); read once, then kept in memory."""
        if epoch == 0:
            return self.init[expert]
        if epoch == self.cfg.pretrain.epochs:
            return self.final[expert]
        key = (expert, epoch)
        if key not in self._epochs:
            self._epochs[key] = {n: t.to(self.device) for n, t in
                                 load_expert_weights(self.cfg, expert, epoch).items()}
        return self._epochs[key]

    def embedding_table(self) -> torch.Tensor:
        """Word embeddings of expert 0's initial weights (the pretrained table)  # [V, H]"""
        key = next(k for k in self.init[0] if k.endswith("word_embeddings.weight"))
        return self.init[0][key]
