"""MERGE's graph attention network on one slide's graph (tensors only; the model class handles AnnData)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._nn import LinearPath, Standardize, import_torch_geometric

NORMS = ("graph", "node", "none")
ATTENTIONS = ("gat", "gatv2")


class MergeGAT(nn.Module):
    """Standardised features -> (projection) -> GATConv blocks -> GATConv to genes, one slide per call.

    Each hidden block is ``GATConv(heads, concatenated) -> ReLU -> LayerNorm``, in the order of MERGE's
    public code. Its LayerNorm is torch-geometric's default ``mode='graph'``, which normalises over all
    spots and channels of the slide; ``norm='node'`` normalises each spot on its own. Edges are dropped
    with probability ``drop_edge`` in training (DropEdge), before every forward pass.

    ``residual=True`` (not in the paper) adds a linear map of each spot's own input to every GAT layer's
    output (torch-geometric's ``GATConv(residual=True)``). Without it a spot reaches its own features only
    through its self-loop's share of the attention (about 1/9 on the 8-neighbour graph, less beside a
    centroid), averaged four times over: on probe targets that depend on the spot's own features alone the
    paper's network loses about half of the signal ridge keeps (``docs/benchmarks.md``).
    """

    def __init__(
        self,
        n_features: int,
        n_genes: int,
        *,
        input_dim: int = 256,
        hidden: Sequence[int] = (448, 384, 256),
        heads: int = 8,
        drop_edge: float = 0.2,
        norm: str = "graph",
        attention: str = "gat",
        residual: bool = False,
        linear_path: bool = False,
    ) -> None:
        import_torch_geometric()
        from torch_geometric.nn import GATConv, GATv2Conv, LayerNorm

        super().__init__()
        if norm not in NORMS:
            msg = f"norm must be one of {NORMS}, got {norm!r}."
            raise ValueError(msg)
        if attention not in ATTENTIONS:
            msg = f"attention must be one of {ATTENTIONS}, got {attention!r}."
            raise ValueError(msg)
        # GATConv (the paper) ranks neighbours the same way for every spot ("static" attention); GATv2 need not
        conv = GATConv if attention == "gat" else GATv2Conv
        if not 0 <= drop_edge < 1:
            msg = f"drop_edge must be in [0, 1), got {drop_edge}."
            raise ValueError(msg)
        self.drop_edge = float(drop_edge)
        self.scale_in = Standardize(n_features)
        # MERGE's GAT reads 256-d patch embeddings; other representations are projected to that width
        self.project = nn.Linear(n_features, input_dim) if n_features != input_dim else nn.Identity()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = n_features if n_features == input_dim else int(input_dim)
        for size in hidden:
            self.convs.append(conv(width, int(size), heads=int(heads), residual=residual))
            width = int(size) * int(heads)
            self.norms.append(nn.Identity() if norm == "none" else LayerNorm(width, mode=norm))
        self.out = conv(width, n_genes, heads=1, residual=residual)
        self.linear_path = LinearPath(n_features, n_genes) if linear_path else None

    def forward(self, batch) -> torch.Tensor:
        from torch_geometric.utils import dropout_edge

        graph = edge_index = batch["edge_index"]
        if self.training and self.drop_edge > 0:
            edge_index, _ = dropout_edge(edge_index, p=self.drop_edge, training=True)
        standardized = self.scale_in(batch["x"])
        x = self.project(standardized)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = norm(torch.relu(conv(x, edge_index)))
        out = self.out(x, edge_index)
        if self.linear_path is not None:  # on the whole graph: no edges dropped from a linear map
            out = out + self.linear_path(standardized, graph)
        return out
