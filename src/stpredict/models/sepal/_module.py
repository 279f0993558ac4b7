"""SEPAL's spatial-learning network on batches of local graphs (tensors only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

CONVS = ("GraphConv", "GCNConv")


class SepalGNN(nn.Module):
    """Node features -> graph convolutions with ELU -> ``SAGPooling`` readout -> a correction per graph.

    As SEPAL's public code: every convolution (the last one outputs the genes) is followed by ELU, and the
    readout is ``SAGPooling`` with the **integer** ratio 1, which keeps the single highest-scoring node of
    each local graph, scaled by ``tanh`` of its score. The batch is laid out as torch-geometric's
    ``Batch`` (``x``, ``edge_index``, ``batch``); the output has one row per graph.
    """

    def __init__(self, n_in: int, n_genes: int, *, hidden: Sequence[int] = (), conv: str = "GraphConv") -> None:
        import torch_geometric.nn as gnn

        super().__init__()
        if conv not in CONVS:
            msg = f"conv must be one of {CONVS}, got {conv!r}."
            raise ValueError(msg)
        layer = getattr(gnn, conv)
        widths = [int(n_in), *map(int, hidden), int(n_genes)]
        self.convs = nn.ModuleList(layer(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.act = nn.ELU()
        self.pool = gnn.SAGPooling(int(n_genes), ratio=1)  # int: one node per graph

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = self.act(conv(x, edge_index))
        pooled, _, _, pooled_batch, _, _ = self.pool(x, edge_index, batch=batch)
        # SAGPooling returns the kept nodes grouped by graph, in graph order: one row per graph
        out = torch.zeros(int(batch.max()) + 1, pooled.shape[1], dtype=pooled.dtype, device=pooled.device)
        return out.index_copy(0, pooled_batch, pooled)
