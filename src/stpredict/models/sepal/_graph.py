"""SEPAL's local graphs: for every spot, itself and its neighbours within ``n_hops`` on the spot grid.

All graphs of a slide set are built once, as flat arrays (CSR-style offsets), and any batch of them is
assembled by slicing: no Python object per spot per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class LocalGraphs:
    """One graph per centre spot; node 0 of every graph is its centre.

    Attributes
    ----------
    node_ptr
        ``(n_graphs + 1,)`` offsets of each graph's nodes in ``nodes``.
    nodes
        Spot index of every node, graph after graph.
    offsets
        ``(n_nodes, 2)`` grid offset (array row, array column) of each node from its graph's centre.
    edge_ptr
        ``(n_graphs + 1,)`` offsets of each graph's edges in ``edges``.
    edges
        ``(2, n_edges)`` edges between a graph's nodes, as positions within that graph (both directions).
    """

    node_ptr: np.ndarray
    nodes: np.ndarray
    offsets: np.ndarray
    edge_ptr: np.ndarray
    edges: np.ndarray

    @property
    def n_graphs(self) -> int:
        return len(self.node_ptr) - 1

    def batch(self, graphs: np.ndarray) -> dict[str, np.ndarray]:
        """The disjoint union of ``graphs``, laid out as torch-geometric's ``Batch``.

        Returns node spots and offsets, ``edge_index``, ``batch`` and ``ptr`` (``ptr[:-1]``: the centres).
        """
        graphs = np.asarray(graphs, dtype=np.int64)
        sizes = self.node_ptr[graphs + 1] - self.node_ptr[graphs]
        node_index = _ranges(self.node_ptr[graphs], sizes)
        edge_sizes = self.edge_ptr[graphs + 1] - self.edge_ptr[graphs]
        edge_index = _ranges(self.edge_ptr[graphs], edge_sizes)
        ptr = np.concatenate([[0], np.cumsum(sizes)])
        shift = np.repeat(ptr[:-1], edge_sizes)  # each graph's local positions move to its block of the union
        return {
            "spots": self.nodes[node_index],
            "offsets": self.offsets[node_index],
            "edge_index": self.edges[:, edge_index] + shift,
            "batch": np.repeat(np.arange(len(graphs)), sizes),
            "ptr": ptr,
        }


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every ``(s, n)``, without a Python loop."""
    total = int(sizes.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    block_start = np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.repeat(starts, sizes) + (np.arange(total) - block_start)


def local_graphs(adjacency: sp.spmatrix, grid: np.ndarray, n_hops: int = 1) -> LocalGraphs:
    """Local graphs of every spot from a spot graph (e.g. ``st.pp.spatial_graph(kind='grid')``).

    Parameters
    ----------
    adjacency
        ``(n, n)`` symmetric spot graph without self-loops (8 neighbours on legacy ST, 6 on Visium).
    grid
        ``(n, 2)`` array coordinates (``array_row``, ``array_col``) giving the positional offsets.
    n_hops
        Neighbours within this many steps join a spot's graph (SEPAL: 1 to 3).

    Returns
    -------
    The graphs, with the edges of ``adjacency`` among each graph's nodes.
    """
    if int(n_hops) != n_hops or n_hops < 1:
        msg = f"n_hops must be a positive integer, got {n_hops}."
        raise ValueError(msg)
    adjacency = sp.csr_matrix(adjacency, dtype=bool)
    n = adjacency.shape[0]
    reach = sp.identity(n, dtype=bool, format="csr")
    step = (adjacency + sp.identity(n, dtype=bool, format="csr")).astype(bool)
    for _ in range(int(n_hops)):
        reach = (reach @ step).astype(bool)
    reach = reach.tocsr()
    reach.sort_indices()
    grid = np.asarray(grid, dtype=np.float64)
    nodes, offsets, edges, node_sizes, edge_sizes = [], [], [], [], []
    for centre in range(n):
        members = reach.indices[reach.indptr[centre] : reach.indptr[centre + 1]]
        members = np.concatenate([[centre], members[members != centre]])  # the centre first
        sub = adjacency[members][:, members].tocoo()
        nodes.append(members)
        offsets.append(grid[members] - grid[centre])
        edges.append(np.vstack([sub.row, sub.col]))
        node_sizes.append(len(members))
        edge_sizes.append(sub.nnz)
    return LocalGraphs(
        node_ptr=np.concatenate([[0], np.cumsum(node_sizes)]).astype(np.int64),
        nodes=np.concatenate(nodes).astype(np.int64),
        offsets=np.concatenate(offsets).astype(np.float32),
        edge_ptr=np.concatenate([[0], np.cumsum(edge_sizes)]).astype(np.int64),
        edges=np.concatenate(edges, axis=1).astype(np.int64),
    )
