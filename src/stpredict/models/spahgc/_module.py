"""SpaHGC's network (Shi et al. 2026) on tensors: heterogeneous layers, CNDA, CNAP, masking, contrastive loss.

Built from torch-geometric's ``HeteroConv``, ``SAGEConv`` and ``TransformerConv`` (softmax(q·k/√d) v over
a node's incoming edges, i.e. the paper's per-edge cross-node attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._nn import LinearPath, Standardize, import_torch_geometric
from ._graph import CLOSE, NEAR, REFER, REFERENCE, REFERRED, TARGET
from ._params import SpahgcParams


def feature_masks(
    shape: tuple[int, int], ratio: float, *, complementary: bool = True, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two boolean keep-masks for the two views; each view masks out ``round(ratio * d)`` features per node.

    ``complementary=True``: the second view keeps exactly what the first masks (``M`` and ``1 - M``, so it
    masks ``d - round(ratio * d)``); ``False``: an independent draw with the same ratio (the ablation).
    """
    n, d = shape
    n_masked = int(round(ratio * d))

    def draw() -> torch.Tensor:
        ranks = torch.rand((n, d), generator=generator).argsort(dim=1).argsort(dim=1)
        return ranks >= n_masked  # True = kept

    first = draw()
    return first, (~first if complementary else draw())


def contrastive_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over nodes of 2 − 2·cos(online, target) (BGRL's loss; 0 for identical views)."""
    return (2 - 2 * F.cosine_similarity(online, target, dim=-1)).mean()


def pearson_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − the mean over genes of the Pearson correlation across spots."""
    pred = pred - pred.mean(0)
    target = target - target.mean(0)
    r = (pred * target).sum(0) / (pred.norm(dim=0) * target.norm(dim=0)).clamp(min=1e-8)
    return 1 - r.mean()


def _attention(hidden: int, heads: int, dropout: float):
    pyg = import_torch_geometric()
    return pyg.nn.TransformerConv((hidden, hidden), hidden // heads, heads=heads, dropout=dropout, root_weight=False)


class SpaHGCNet(nn.Module):
    """Input projections, ``n_layers`` heterogeneous layers, CNAP, residual and MLP → genes.

    Each layer: ``SAGEConv`` on target–target and on reference–reference edges, Cross-Node Dual Attention
    (CNDA) on reference → target and target → reference edges; every node averages what its relations
    give (``HeteroConv(aggr='mean')``: local and cross-attentional embeddings), then LeakyReLU.
    CNAP: each target's multi-head attention over its reference neighbours' final embeddings, an output
    projection, added to the target's own embedding (the residual) before the MLP.

    ``cnda=False`` drops the cross-slice relations from the layers; ``cnap=False`` predicts from the
    target embedding alone. ``residual=True`` (not in the paper) adds each layer's input to its output: in
    the paper's layers a spot's own embedding is averaged with its look-alike references' at every layer
    (``aggr='mean'`` over the relations), so after four layers little of the spot itself is left.
    """

    def __init__(self, n_features: int, n_genes: int, params: SpahgcParams) -> None:
        super().__init__()
        p = params
        hidden, heads, dropout = p.hidden, p.heads, p.dropout
        pyg = import_torch_geometric()
        self.cnda, self.cnap, self.residual = p.cnda, p.cnap, p.residual
        self.project = nn.ModuleDict(
            {
                TARGET: nn.Sequential(nn.Linear(n_features, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2)),
                REFERENCE: nn.Sequential(
                    nn.Linear(n_features + n_genes, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2)
                ),
            }
        )
        self.layers = nn.ModuleList()
        for _ in range(p.n_layers):
            relations = {NEAR: pyg.nn.SAGEConv(hidden, hidden), CLOSE: pyg.nn.SAGEConv(hidden, hidden)}
            if p.cnda:
                relations[REFER] = _attention(hidden, heads, dropout)
                relations[REFERRED] = _attention(hidden, heads, dropout)
            self.layers.append(pyg.nn.HeteroConv(relations, aggr="mean"))
        if p.cnap:
            self.pool = _attention(hidden, heads, dropout)
            self.pool_out = nn.Linear(hidden, hidden)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, n_genes))
        self.linear_path = LinearPath(n_features, n_genes) if p.linear_path else None

    @staticmethod
    def _edges(batch) -> dict[tuple[str, str, str], torch.Tensor]:
        return {t: batch[f"edges_{t[1]}"] for t in (NEAR, REFER, REFERRED, CLOSE)}

    def encode(self, x_target: torch.Tensor, x_reference: torch.Tensor, edges) -> dict[str, torch.Tensor]:
        """Final embeddings of the target and reference nodes."""
        x = {TARGET: self.project[TARGET](x_target), REFERENCE: self.project[REFERENCE](x_reference)}
        if not self.cnda:
            edges = {t: e for t, e in edges.items() if t in (NEAR, CLOSE)}
        for layer in self.layers:
            out = layer(x, edges)
            new = {name: F.leaky_relu(out.get(name, x[name]), 0.2) for name in x}
            x = {name: new[name] + x[name] for name in x} if self.residual else new
        return x

    def readout(self, x: dict[str, torch.Tensor], edges) -> torch.Tensor:
        """CNAP + residual + MLP: the genes of every target node."""
        target = x[TARGET]
        if self.cnap:
            pooled = self.pool((x[REFERENCE], target), edges[REFER])
            target = target + self.pool_out(pooled)
        return self.head(target)

    def predict(self, x: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], edges) -> torch.Tensor:
        """The genes of every target node from the final embeddings ``x``, plus the linear path if any."""
        out = self.readout(x, edges)
        if self.linear_path is not None:  # on the unmasked features and the target slide's spatial edges
            out = out + self.linear_path(batch["x_target"], edges[NEAR])
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        edges = self._edges(batch)
        return self.predict(self.encode(batch["x_target"], batch["x_reference"], edges), batch, edges)


class SpaHGCRegressor(nn.Module):
    """:class:`SpaHGCNet` with its training objective: masked views, the asymmetric contrastive terms, MSE + PCC.

    In training, view 1 (features kept by ``M``) goes through the encoder with gradients and gives the
    prediction; view 2 (``1 - M``) goes through the same encoder without gradients and is the stable
    target of the contrastive terms (the paper's asymmetric design; the public code instead encodes view 2
    with a frozen copy of the initial encoder that is never updated). Prediction reads the unmasked graph.

    ``supervised_view='full'`` (not in the paper) trains the prediction on the unmasked graph, the masked
    views serving the contrastive terms only: with the paper's 80 % target masking the readout otherwise
    learns from a fifth of each spot's features and then meets all of them (``docs/benchmarks.md``).
    """

    def __init__(self, n_features: int, n_genes: int, params: SpahgcParams) -> None:
        super().__init__()
        p = params  # choices and ranges checked by SpahgcParams
        self.supervised_view = p.supervised_view
        self.scale_in = Standardize(n_features)  # embeddings are standardised before retrieval and the graph
        self.net = SpaHGCNet(n_features, n_genes, p)
        self.masking = p.masking
        self.ratios = {TARGET: p.target_mask_ratio, REFERENCE: p.reference_mask_ratio}
        self.weights = (p.pcc_weight, p.target_contrast_weight, p.reference_contrast_weight)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        edges = self.net._edges(batch)
        pcc_weight, target_weight, reference_weight = self.weights
        if self.masking == "none":
            pred = self.net.predict(self.net.encode(batch["x_target"], batch["x_reference"], edges), batch, edges)
            return F.mse_loss(pred, batch["y"]) + pcc_weight * pearson_loss(pred, batch["y"])
        views = {name: self._masked(batch[f"x_{name}"], self.ratios[name]) for name in (TARGET, REFERENCE)}
        online = self.net.encode(views[TARGET][0], views[REFERENCE][0], edges)
        with torch.no_grad():
            stable = self.net.encode(views[TARGET][1], views[REFERENCE][1], edges)
        # 'masked' (the paper): the prediction is trained on view 1, which keeps only 1 - ratio of each spot's
        # features, yet prediction reads all of them; 'full' trains it on the unmasked graph, as it is used
        full = self.supervised_view == "full"
        pred = self.net.predict(
            self.net.encode(batch["x_target"], batch["x_reference"], edges) if full else online, batch, edges
        )
        return (
            F.mse_loss(pred, batch["y"])
            + pcc_weight * pearson_loss(pred, batch["y"])
            + target_weight * contrastive_loss(online[TARGET], stable[TARGET])
            + reference_weight * contrastive_loss(online[REFERENCE], stable[REFERENCE])
        )

    def _masked(self, x: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
        keep1, keep2 = feature_masks(tuple(x.shape), ratio, complementary=self.masking == "complementary")
        keep1, keep2 = keep1.to(x.device), keep2.to(x.device)
        return x * keep1, x * keep2
