"""Spot graph of M2TGLGO: the kNN edges the GATs read and the exact 1-, 2- and 3-hop neighbourhoods of SONRM."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def edge_index(adjacency: sp.spmatrix) -> np.ndarray:
    """``(2, E)`` source/target indices of a sparse adjacency (``int64``), self-loops left out."""
    coo = sp.coo_matrix(adjacency)
    keep = coo.row != coo.col
    return np.vstack([coo.col[keep], coo.row[keep]]).astype(np.int64)  # message from column to row


def hop_pairs(adjacency: sp.spmatrix, n_hops: int = 3) -> list[np.ndarray]:
    """Per hop ``r = 1..n_hops``: ``(2, E_r)`` pairs ``(spot, other)`` at exactly ``r`` hops, sorted by spot.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> path = sp.diags([1, 1, 1], 1, shape=(4, 4))  # 0 - 1 - 2 - 3
    >>> [p[:, p[0] == 0].tolist() for p in hop_pairs(path + path.T)]
    [[[0], [1]], [[0], [2]], [[0], [3]]]
    """
    n = adjacency.shape[0]
    step = (sp.csr_matrix(adjacency, dtype=bool) + sp.identity(n, dtype=bool, format="csr")).astype(np.float32)
    within = sp.identity(n, dtype=np.float32, format="csr")
    pairs = []
    for _ in range(n_hops):
        grown = within @ step
        grown.data[:] = 1.0
        exact = (grown - within).tocoo()  # reached in this hop and not before
        keep = exact.data > 0
        order = np.lexsort((exact.col[keep], exact.row[keep]))
        pairs.append(np.vstack([exact.row[keep][order], exact.col[keep][order]]).astype(np.int64))
        within = grown.tocsr()
    return pairs
