"""k-means picks on feature vectors (pure functions, no project state): per class, k-means with
k centroids (sklearn, seeded), then the real sample nearest each centroid, all distinct (DiLM's
"K-centers" baseline). Used by the evaluation baseline `kmeans` (`evaluation.selectors`) and the
condenser's `init: kmeans` (the same picks), and by `init: manifold` for its nearest samples."""
from __future__ import annotations

import numpy as np
import torch


def nearest_distinct(points: np.ndarray, centers: np.ndarray) -> list:
    """For each centre in turn, the position of the nearest point not taken yet
    points  # [n, d], centers  # [k, d] (k <= n) -> k distinct positions"""
    dists = ((points[:, None, :] - centers[None]) ** 2).sum(-1)          # [n, k]
    chosen, used = [], set()
    for k in range(centers.shape[0]):
        for j in dists[:, k].argsort():
            if int(j) not in used:
                used.add(int(j))
                chosen.append(int(j))
                break
    return chosen


def kmeans_select(feats: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Positions (into `feats` [n, H]) of the samples nearest each of k k-means centroids
    (distinct; all n positions when n <= k)  # [min(k, n)]"""
    n = feats.shape[0]
    if n <= k:
        return torch.arange(n)
    from sklearn.cluster import KMeans

    x = feats.detach().float().cpu().numpy().astype(np.float64)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed % (2 ** 31)).fit(x)
    return torch.tensor(nearest_distinct(x, km.cluster_centers_), dtype=torch.long)
