"""A dense, obviously-correct numpy SPCS: the oracle for the numba kernel (O(n²) memory; small slides only)."""

from __future__ import annotations

import numpy as np


def spcs_dense(x, rows, cols, scores, *, hexagonal=False, tau_p=16, tau_s=2, alpha=0.6, beta=0.4):
    n = len(x)
    # pattern neighbours: Pearson between spots' PC score vectors, over the whole slide
    r = np.corrcoef(scores)
    d = 1.0 - r
    kernel = np.exp(-4.5 * d**2)
    kernel[d > 1] = 0.0
    np.fill_diagonal(kernel, 0.0)
    pattern = np.zeros((n, n))
    for i in range(n):
        order = np.argsort(-kernel[i], kind="stable")[:tau_p]
        order = order[kernel[i, order] > 0]
        if len(order):
            pattern[i, order] = kernel[i, order] / kernel[i, order].sum()
    # spatial neighbours: grid Manhattan distance <= tau_s (doubled on hex indexing), weight 1/d
    manhattan = np.abs(rows[:, None] - rows[None, :]) + np.abs(cols[:, None] - cols[None, :])
    limit = tau_s * (2 if hexagonal else 1)
    spatial = np.where((manhattan > 0) & (manhattan <= limit), 1.0 / np.maximum(manhattan, 1), 0.0)
    totals = spatial.sum(axis=1, keepdims=True)
    spatial = np.divide(spatial, totals, out=np.zeros_like(spatial), where=totals > 0)
    out = np.empty_like(x, dtype=float)
    for i in range(n):
        has_s, has_p = spatial[i].sum() > 0, pattern[i].sum() > 0
        if not (has_s or has_p):
            out[i] = x[i]
            continue
        b = beta if (has_s and has_p) else (1.0 if has_s else 0.0)
        out[i] = (1 - alpha) * x[i] + alpha * (b * spatial[i] @ x + (1 - b) * pattern[i] @ x)
    return out
