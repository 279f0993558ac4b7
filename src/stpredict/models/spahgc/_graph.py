"""SpaHGC's heterogeneous graph of one target slide: its spots, their look-alike reference spots, and the edges."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .._nn import import_torch_geometric
from ._bank import ReferenceBank, cosine_topk

TARGET, REFERENCE = "target", "reference"
NEAR = (TARGET, "near", TARGET)  # target-slice edges: spatial neighbours
REFER = (REFERENCE, "refer", TARGET)  # cross-slice edges: a target's look-alike references
REFERRED = (TARGET, "referred_by", REFERENCE)  # the same edges reversed (CNDA's second direction)
CLOSE = (REFERENCE, "close", REFERENCE)  # reference-slice edges: each reference's most similar peers
EDGE_TYPES = (NEAR, REFER, REFERRED, CLOSE)


def _edges_to(graph: sp.spmatrix) -> np.ndarray:
    """``(2, E)`` edge index (source, destination) of a CSR adjacency whose row ``i`` lists ``i``'s neighbours."""
    coo = sp.coo_matrix(graph)
    return np.vstack([coo.col, coo.row]).astype(np.int64)


def hetero_graph(
    target_embeddings: np.ndarray,
    spatial_neighbours: sp.spmatrix,
    bank: ReferenceBank,
    *,
    k: int = 7,
    n_reference_neighbours: int = 3,
    allowed: np.ndarray | None = None,
):
    """The heterogeneous graph of one target slide, as a torch-geometric ``HeteroData``.

    - ``'target'`` nodes: the slide's spots, ``x`` = their (standardised) embedding;
    - ``'reference'`` nodes: the bank spots retrieved by any target, ``x`` = [embedding ‖ expression],
      ``bank_index`` = their row in the bank;
    - ``('target', 'near', 'target')``: ``spatial_neighbours`` (row ``i`` lists ``i``'s neighbours);
    - ``('reference', 'refer', 'target')``: each target's ``k`` most cosine-similar bank spots among
      ``allowed`` (``edge_attr``: the similarity), and the reverse relation ``('target', 'referred_by',
      'reference')``;
    - ``('reference', 'close', 'reference')``: each reference node's ``n_reference_neighbours`` most similar
      other reference nodes of this graph, by cosine of [embedding ‖ expression].

    Also returns the matches ``(bank indices (n, k), similarities (n, k))``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from stpredict.models.spahgc import ReferenceBank, hetero_graph
    >>> rng = np.random.default_rng(0)
    >>> bank = ReferenceBank(rng.normal(size=(20, 4)), rng.normal(size=(20, 2)), np.repeat(["a", "b"], 10), np.arange(20).astype(str))
    >>> near = sp.csr_matrix(np.eye(3, k=1) + np.eye(3, k=-1))
    >>> graph, (matched, similarity) = hetero_graph(rng.normal(size=(3, 4)), near, bank, k=2)
    >>> graph["reference", "refer", "target"].num_edges, matched.shape, graph["reference"].x.shape[1]
    (6, (3, 2), 6)
    """
    HeteroData = import_torch_geometric().data.HeteroData
    matches, similarity = cosine_topk(target_embeddings, bank.embeddings, k, allowed=allowed)
    nodes, local = np.unique(matches, return_inverse=True)
    local = local.reshape(matches.shape)
    reference_x = bank.node_features(nodes)
    n_targets = len(target_embeddings)
    refer = np.vstack([local.ravel(), np.repeat(np.arange(n_targets), k)]).astype(np.int64)

    data = HeteroData()
    data[TARGET].x = torch.from_numpy(np.ascontiguousarray(target_embeddings, dtype=np.float32))
    data[REFERENCE].x = torch.from_numpy(reference_x)
    data[REFERENCE].bank_index = torch.from_numpy(nodes.astype(np.int64))
    data[NEAR].edge_index = torch.from_numpy(_edges_to(spatial_neighbours))
    data[REFER].edge_index = torch.from_numpy(refer)
    data[REFER].edge_attr = torch.from_numpy(similarity.ravel().astype(np.float32))
    data[REFERRED].edge_index = torch.from_numpy(refer[::-1].copy())
    data[CLOSE].edge_index = torch.from_numpy(_peer_edges(reference_x, n_reference_neighbours))
    return data, (matches, similarity)


def _peer_edges(features: np.ndarray, n_neighbours: int) -> np.ndarray:
    """Each node's ``n_neighbours`` most cosine-similar other nodes, as (peer → node) edges."""
    n = len(features)
    n_neighbours = min(n_neighbours, n - 1)
    if n_neighbours < 1:
        return np.zeros((2, 0), dtype=np.int64)
    peers, _ = cosine_topk(features, features, n_neighbours + 1)
    not_self = peers != np.arange(n)[:, None]  # self is usually first, but ties can place it anywhere
    first = np.argsort(~not_self, axis=1, kind="stable")[:, :n_neighbours]
    chosen = np.take_along_axis(peers, first, axis=1)
    return np.vstack([chosen.ravel(), np.repeat(np.arange(n), n_neighbours)]).astype(np.int64)


def graph_tensors(data) -> dict[str, torch.Tensor]:
    """A ``HeteroData`` flattened to the tensors the network reads (a batch item of the shared loop)."""
    item = {"x_target": data[TARGET].x, "x_reference": data[REFERENCE].x}
    for edge_type in EDGE_TYPES:
        item[f"edges_{edge_type[1]}"] = data[edge_type].edge_index
    return item
