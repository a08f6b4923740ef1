"""Loss computation of the condenser: feature matching and calibration, one class at a time."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from NCFM import distribution_loss
from utils.config_schema import CondenseConfig
from utils.model import TextClassifier
from utils.training import classification_loss


def cls_features(model: TextClassifier, layer_index: Sequence[int], *, input_ids=None,
                 inputs_embeds=None, attention_mask=None) -> torch.Tensor:
    """L2-normalised [CLS] features of the chosen layers  # [K, B, H]"""
    feats = model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                  layer_index=layer_index).features
    return F.normalize(feats, dim=-1)


def match_loss(feat_real: torch.Tensor, feat_syn: torch.Tensor, t: Optional[torch.Tensor],
               cfg: CondenseConfig) -> torch.Tensor:
    """Distribution discrepancy summed over layers, times `loss_scale`.

    feat_real  # [K, B, H]   feat_syn  # [K, M, H]   t  # [F, H] (NCFM frequencies)
    """
    kwargs = {"alpha": cfg.alpha_for_loss, "beta": cfg.beta_for_loss} if cfg.dis_metrics == "NCFM" else {}
    per_layer = [distribution_loss(cfg.dis_metrics, fr, fs, t=t, **kwargs)
                 for fr, fs in zip(feat_real, feat_syn)]
    return cfg.loss_scale * torch.stack(per_layer).sum()


def calibration_loss(model_final: TextClassifier, embeds: torch.Tensor, mask: torch.Tensor,
                     labels: torch.Tensor, weight: float) -> torch.Tensor:
    """Classification loss of the final expert on synthetic data (CE, or BCE for multi-label).

    embeds  # [M, L, H]   mask  # [M, L]   labels  # [M] or [M, C]
    """
    logits = model_final(inputs_embeds=embeds, attention_mask=mask).logits
    return weight * classification_loss(logits, labels)
