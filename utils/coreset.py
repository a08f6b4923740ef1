"""Coreset algorithms on feature vectors (pure functions, no project state): herding and greedy
k-center picks, and the pooled last-layer features of a classifier they run on. Used by the
evaluation baselines (`evaluation.selectors`) and by the condenser's `init: herding|kcenter`, so a
set that starts from herding starts from exactly the herding baseline's picks."""
from __future__ import annotations

import logging
from typing import List, Optional

import torch

from utils.logging_utils import progress
from utils.model import TextClassifier
from utils.training import by_length, cut_to_length

logger = logging.getLogger(__name__)


@torch.no_grad()
def herding_select(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Positions (into `feats` [n, H]) of k herding picks, in pick order."""
    feats = feats.double()
    mu = feats.mean(0)
    chosen: List[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(feats), dtype=torch.bool)
    for t in range(min(k, len(feats))):
        # distance between the class mean and the mean of the picks with each candidate added
        cand = (running.unsqueeze(0) + feats) / (t + 1)
        dist = (cand - mu).norm(dim=1)
        dist[~available] = float("inf")
        i = int(torch.argmin(dist))
        chosen.append(i)
        available[i] = False
        running += feats[i]
    return torch.tensor(chosen, dtype=torch.long)


@torch.no_grad()
def kcenter_select(feats: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Positions (into `feats` [n, H]) of k greedy k-center picks, in pick order."""
    feats = feats.double()
    n = len(feats)
    if n == 0 or k <= 0:
        return torch.zeros(0, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=gen))
    chosen = [first]
    min_dist = (feats - feats[first]).norm(dim=1)
    for _ in range(min(k, n) - 1):
        min_dist[chosen] = -1.0                     # never re-pick a centre
        i = int(torch.argmax(min_dist))
        chosen.append(i)
        min_dist = torch.minimum(min_dist, (feats - feats[i]).norm(dim=1))
    return torch.tensor(chosen, dtype=torch.long)


@torch.no_grad()
def expert_features(model: TextClassifier, attention_mask: torch.Tensor, batch_size: int,
                    device: torch.device, input_ids: Optional[torch.Tensor] = None,
                    inputs_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pooled features of the last layer  # [N, H] (CPU, float32)"""
    model.eval()
    n = attention_mask.shape[0]
    out = torch.zeros(n, model.hidden_size)
    logger.info("expert features of %d rows (batches of %d)", n, batch_size)
    batches = by_length(attention_mask.cpu(), batch_size)        # similar lengths, trimmed padding
    for idx in progress(batches, enabled=True, desc="features", total=-(-n // batch_size)):
        x = input_ids[idx] if input_ids is not None else inputs_embeds[idx].float()
        mask, x = cut_to_length(attention_mask[idx].cpu(), x.cpu())
        kw = {"input_ids" if input_ids is not None else "inputs_embeds": x.to(device)}
        feats = model(attention_mask=mask.to(device), layer_index=[-1], **kw).features
        out[idx] = feats[0].float().cpu()
    return out
