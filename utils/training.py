"""Training and evaluation loops shared by the expert, evaluation and distillation stages."""
from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from utils.data import TokenizedSplit
from utils.logging_utils import progress


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class indices [B]; BCE-with-logits for multi-hot / soft label vectors [B, C]."""
    if labels.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


def batch_indices(n: int, batch_size: int, generator: Optional[torch.Generator] = None,
                  shuffle: bool = True) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
                        ) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, int(math.ceil(warmup_ratio * total_steps))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(model, split: TokenizedSplit, optimizer, scheduler, batch_size: int,
                    device: torch.device, generator: torch.Generator, show_progress: bool = False,
                    desc: str = "train") -> float:
    """One pass over `split` in a seeded order; returns the mean training loss."""
    model.train()
    total, count = 0.0, 0
    n_batches = math.ceil(len(split) / batch_size)
    bar = progress(batch_indices(len(split), batch_size, generator), enabled=show_progress,
                   total=n_batches, desc=desc)
    for idx in bar:
        logits = model(input_ids=split.input_ids[idx].to(device),
                       attention_mask=split.attention_mask[idx].to(device)).logits
        loss = classification_loss(logits, split.labels[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(idx)
        count += len(idx)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / max(1, count)


@torch.no_grad()
def predict_logits(model, split: TokenizedSplit, batch_size: int, device: torch.device) -> torch.Tensor:
    model.eval()
    out = []
    for idx in batch_indices(len(split), batch_size, shuffle=False):
        out.append(model(input_ids=split.input_ids[idx].to(device),
                         attention_mask=split.attention_mask[idx].to(device)).logits.float().cpu())
    return torch.cat(out)


def scores_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """accuracy and macro-F1 (single-label); subset accuracy, micro- and macro-F1 (multi-label)."""
    if labels.dim() == 2:
        pred = (logits > 0).int().numpy()
        true = labels.int().numpy()
        return {"accuracy": float((pred == true).all(axis=1).mean()),
                "micro_f1": float(f1_score(true, pred, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0))}
    pred = logits.argmax(dim=1).numpy()
    true = labels.numpy()
    return {"accuracy": float(np.mean(pred == true)),
            "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0))}


def evaluate_classifier(model, split: TokenizedSplit, batch_size: int, device: torch.device) -> dict:
    return scores_from_logits(predict_logits(model, split, batch_size, device), split.labels)
