"""SEPAL's spatial-learning network on batches of local graphs (tensors only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._data import Key
from .._nn import Standardize, import_torch_geometric

CONVS = ("GraphConv", "GCNConv")
READOUTS = ("sagpool", "centre")
AGGREGATIONS = ("add", "mean")


class SepalGNN(nn.Module):
    """Node features -> graph convolutions with ELU -> ``SAGPooling`` readout -> a correction per graph.

    As SEPAL's public code: every convolution (the last one outputs the genes) is followed by ELU, and the
    readout is ``SAGPooling`` with the **integer** ratio 1, which keeps the single highest-scoring node of
    each local graph, scaled by ``tanh`` of its score. The batch is laid out as torch-geometric's
    ``Batch`` (``x``, ``edge_index``, ``batch``); the output has one row per graph.

    ``aggregation='mean'`` (not in the paper; GraphConv sums its neighbours) averages them, so that a spot at
    the tissue edge with 3 neighbours and one inside with 8 get corrections on the same scale.
    ``readout='centre'`` (not in the paper) reads the centre node of each graph instead (node 0, given by
    ``ptr``), without the last ELU: the correction is then computed *for* the spot being predicted, from
    its own and its neighbours' features, rather than taken from whichever node scores highest (at the start
    of training all scores are equal, so that node is an arbitrary neighbour) and squashed below at -1.
    """

    def __init__(
        self,
        n_in: int,
        n_genes: int,
        *,
        hidden: Sequence[int] = (),
        conv: str = "GraphConv",
        readout: str = "sagpool",
        aggregation: str = "add",
    ) -> None:
        import_torch_geometric()
        import torch_geometric.nn as gnn

        super().__init__()
        if conv not in CONVS:
            msg = f"conv must be one of {CONVS}, got {conv!r}."
            raise ValueError(msg)
        if readout not in READOUTS:
            msg = f"readout must be one of {READOUTS}, got {readout!r}."
            raise ValueError(msg)
        self.readout = readout
        layer = getattr(gnn, conv)
        widths = [int(n_in), *map(int, hidden), int(n_genes)]
        if aggregation not in AGGREGATIONS:
            msg = f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}."
            raise ValueError(msg)
        pairs = zip(widths[:-1], widths[1:], strict=True)
        # GCNConv normalises by degree itself; GraphConv sums its neighbours unless told to average them
        options = {"aggr": aggregation} if conv == "GraphConv" else {}
        self.convs = nn.ModuleList(layer(a, b, **options) for a, b in pairs)
        self.act = nn.ELU()
        # int ratio: one node per graph; the centre readout has no pooling (and no unused weights under DDP)
        self.pool = gnn.SAGPooling(int(n_genes), ratio=1) if readout == "sagpool" else None

    @torch.no_grad()
    def zero_output(self) -> None:
        """Zero the last convolution, so the correction starts at 0 (ELU(0) = 0) and training starts from stage 1.

        Its inputs stay non-zero, so it still learns at once; the earlier layers follow as it grows.
        """
        for parameter in self.convs[-1].parameters():
            parameter.zero_()

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor, ptr: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.readout == "centre":
            for conv in self.convs[:-1]:
                x = self.act(conv(x, edge_index))
            return self.convs[-1](x, edge_index)[ptr[:-1]]
        for conv in self.convs:
            x = self.act(conv(x, edge_index))
        pooled, _, _, pooled_batch, _, _ = self.pool(x, edge_index, batch=batch)
        # SAGPooling returns the kept nodes grouped by graph, in graph order: one row per graph
        out = torch.zeros(int(batch.max()) + 1, pooled.shape[1], dtype=pooled.dtype, device=pooled.device)
        return out.index_copy(0, pooled_batch, pooled)


class PatchEncoder(nn.Module):
    """SEPAL's stage-1 image encoder: a CNN from ``st.pp.ENCODERS``, randomly initialised.

    Patches are resized to ``input_size`` and scaled per channel with the training images' statistics (kept
    as buffers, so a saved model embeds new slides exactly as it embedded the training slides).
    """

    def __init__(self, arch: str = "resnet18", input_size: int = 64) -> None:
        from dataclasses import replace

        from ...pp._encoders import build_backbone, encoder_spec

        super().__init__()
        spec = replace(encoder_spec(arch), input_size=int(input_size))
        self.backbone = build_backbone(spec, pretrained=False)
        self.dim = int(spec.dim if spec.dim > 0 else self.backbone.num_features)
        self.input_size = int(input_size)
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))

    def scale(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] ``(n, 3, s, s)`` -> the network's standardised input."""
        return (images - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_std.view(1, 3, 1, 1)

    def forward(self, scaled: torch.Tensor) -> torch.Tensor:
        return self.backbone(scaled)


CONCAT_DIM = 16  # width of the position code when concatenated


class SepalNet(nn.Module):
    """Stage 1 (optional CNN, then a linear head on standardised embeddings) and stage 2 (the local-graph GNN)."""

    def __init__(
        self,
        n_features: int,
        n_genes: int,
        *,
        hidden,
        conv: str,
        positions: str,
        stage2: bool,
        encoder: PatchEncoder | None = None,
        zero_correction: bool = True,
        readout: str = "sagpool",
        aggregation: str = "add",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        n_features = encoder.dim if encoder is not None else n_features
        self.scale_in = Standardize(n_features)
        self.head = nn.Linear(n_features, n_genes)  # stage 1: L(I_emb)
        self.positions = positions
        width = n_features + (CONCAT_DIM if positions == "concat" else 0)
        gnn_options = {"hidden": hidden, "conv": conv, "readout": readout, "aggregation": aggregation}
        self.gnn = SepalGNN(width, n_genes, **gnn_options) if stage2 else None
        if self.gnn is not None and zero_correction:
            self.gnn.zero_output()

    def local(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.scale_in(x))

    def forward(self, batch) -> torch.Tensor:
        if Key.EDGE_INDEX not in batch:  # stage 1 training and prediction
            return self.local(batch[Key.X])
        nodes = self.scale_in(batch[Key.X])
        nodes = nodes + batch["pos"] if self.positions == "add" else torch.cat([nodes, batch["pos"]], dim=1)
        return batch["base"] + self.gnn(nodes, batch[Key.EDGE_INDEX], batch["batch"], batch["ptr"])

    @torch.no_grad()
    def fold_scaling_into_head(self) -> None:
        """Make ``head(scale_in(x))`` equal the head trained on raw ``x`` (the CNN's head).

        For the current ``scale_in``: W' = W diag(std), b' = b + W mean.
        """
        self.head.bias += self.head.weight @ self.scale_in.mean
        self.head.weight *= self.scale_in.std
