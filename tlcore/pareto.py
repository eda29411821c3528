"""Pareto frontier: the models no other model beats on both cost and accuracy."""

from __future__ import annotations

import numpy as np


def pareto_front(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Boolean mask of points on the frontier (lower ``cost`` and higher ``score`` are better).

    A point is on the front when no other point has cost <= and score >= with one strict.
    NaN points are never on it. Shapes: (n,), (n,) -> (n,) bool. O(n log n).
    """
    cost = np.asarray(cost, dtype=float)
    score = np.asarray(score, dtype=float)
    mask = np.zeros(cost.shape, dtype=bool)
    valid = np.flatnonzero(~(np.isnan(cost) | np.isnan(score)))
    # Cheapest first; among equal costs the best score first, so only it can qualify.
    order = valid[np.lexsort((-score[valid], cost[valid]))]
    best = -np.inf
    for i in order:
        if score[i] > best:
            mask[i] = True
            best = score[i]
    return mask
