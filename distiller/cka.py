"""FSD's feature-structure pieces: linear CKA and the global centroid memory of `cka_global`.

CKA is linear CKA on centred Gram matrices with an epsilon (`linear_cka`): invariant to orthogonal
transforms and isotropic scaling, 1 for identical features, defined for different widths.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def linear_cka(x: torch.Tensor, y: torch.Tensor, mask: Optional[torch.Tensor] = None,
               eps: float = 1e-8) -> torch.Tensor:
    """Linear CKA of row-aligned features, batched over leading dims.

    x  # [..., n, d1]   y  # [..., n, d2]   mask  # [..., n] (rows to use; others ignored)
    -> [...]: <K_x, K_y> / (||K_x|| ||K_y||) with K = X_c X_c^T on centred rows.
    """
    x, y = x.double(), y.double()
    if mask is not None:
        m = mask.unsqueeze(-1).double()                                     # [..., n, 1]
        count = m.sum(-2, keepdim=True).clamp_min(1.0)
        x = (x - (x * m).sum(-2, keepdim=True) / count) * m
        y = (y - (y * m).sum(-2, keepdim=True) / count) * m
    else:
        x = x - x.mean(-2, keepdim=True)
        y = y - y.mean(-2, keepdim=True)
    kx = x @ x.transpose(-1, -2)                                            # [..., n, n]
    ky = y @ y.transpose(-1, -2)
    hsic = (kx * ky).sum((-1, -2))
    # clamped before the square root: a constant feature set (norm 0) gives CKA 0 and a zero,
    # not NaN, gradient
    norm = ((kx * kx).sum((-1, -2)).clamp_min(eps * eps).sqrt()
            * (ky * ky).sum((-1, -2)).clamp_min(eps * eps).sqrt())
    return (hsic / (norm + eps)).float()


class CentroidMemory(nn.Module):
    """FSD's global memory: k-means centroids of the teacher's [CLS] features of the training
    data (`build`, once, before training) and their student counterparts: every batch, each
    sample joins its nearest teacher centroid, and both the teacher centroid and the student
    centroid move to their members' mean (EMA, no gradient)."""

    def __init__(self, teacher_centroids: torch.Tensor, student_dim: int, momentum: float = 0.9):
        super().__init__()
        k = teacher_centroids.shape[0]
        self.register_buffer("teacher", teacher_centroids.float())                 # [K, H_t]
        self.register_buffer("student", torch.zeros(k, student_dim))              # [K, H_s]
        self.register_buffer("seen", torch.zeros(k))
        self.momentum = momentum

    @torch.no_grad()
    def update(self, f_t: torch.Tensor, f_s: torch.Tensor) -> None:
        """Each batch sample joins its nearest teacher centroid; both sides of that centroid move
        towards the members' mean (EMA), the student side starting at its first members' mean.
        f_t  # [B, H_t]   f_s  # [B, H_s]  (under data parallelism: the whole global batch)"""
        nearest = torch.cdist(f_t.float(), self.teacher).argmin(1)                # [B]
        m = self.momentum
        for k in nearest.unique().tolist():
            members = nearest == k
            self.teacher[k] = m * self.teacher[k] + (1 - m) * f_t[members].float().mean(0)
            mean = f_s[members].float().mean(0)
            self.student[k] = mean if self.seen[k] == 0 else m * self.student[k] + (1 - m) * mean
            self.seen[k] += 1

    @classmethod
    def build(cls, teacher_features: torch.Tensor, k: int, student_dim: int, seed: int
              ) -> "CentroidMemory":
        from sklearn.cluster import KMeans

        k = min(k, len(teacher_features))
        km = KMeans(n_clusters=k, n_init=4, random_state=seed % (2 ** 31)).fit(
            teacher_features.float().numpy())
        return cls(torch.from_numpy(km.cluster_centers_).float(), student_dim)
