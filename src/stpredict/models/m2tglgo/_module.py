"""M2TGLGO's networks and losses (Shi et al., CVPR 2025): tensors only.

- MMGE (Eq. 1-6): per modality an intra-modal GAT and the inter-modal attention, mixed γ·intra + (1-γ)·inter,
  over two layers; the modality embeddings concatenated, a linear layer and a sigmoid give the spots' H.
- Gene predictors P: one GAT over the Gene Ontology gene graph on gene node features; prediction H·Pᵀ.
- Losses: MSE, adjacency reconstruction (Eq. 7-8) and the spatial-oriented neighbourhood ranking (Eq. 9).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._data import Key
from .._nn import LinearPath, Standardize, import_torch_geometric
from ._params import M2tglgoParams

#: columns of ``st.pp.image_features(method='nuclei')`` per nuclei modality (the 18th, the count, is not used)
NUCLEI_COLUMNS = {"morphology": slice(0, 14), "topology": slice(14, 17)}
QUARTILES = (0.25, 0.5, 0.75, 1.0)
ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": F.relu, "none": lambda x: x}


class InterModal(nn.Module):
    """Inter-modal aggregation (Eq. 2-4): ``X'_m = ReLU(X_m Q_m)``, ``H^IT_m = Σ_k β_mk X'_k``.

    β is a softmax over modalities of the agreement between projections. The paper's score is the trace
    ``tr(X'_m X'_kᵀ)``, a sum over all spots of a slide that saturates the softmax on any real slide; as in
    the authors' code, the mean over spots of the cosine similarity is used instead (same ordering, bounded).
    """

    def __init__(self, in_dims: dict[str, int], out_dim: int) -> None:
        super().__init__()
        self.project = nn.ModuleDict({m: nn.Linear(d, out_dim, bias=False) for m, d in in_dims.items()})

    def forward(self, xs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        names = list(self.project)
        projected = torch.stack([F.relu(self.project[m](xs[m])) for m in names])  # (M, N, D)
        flat = F.normalize(projected, dim=-1).flatten(1)  # (M, N·D): one matmul sums over spots and channels
        beta = torch.softmax(flat @ flat.T / projected.shape[1], dim=1)
        mixed = (beta @ projected.flatten(1)).view_as(projected)
        return {m: mixed[i] for i, m in enumerate(names)}, beta


class MMGELayer(nn.Module):
    """One layer of the multi-modal graph embedding: ``H_m = γ σ(GAT_m(X_m)) + (1-γ) H^IT_m`` (Eq. 1, 5)."""

    def __init__(
        self,
        in_dims: dict[str, int],
        out_dim: int,
        *,
        gamma: float,
        dropout: float,
        activation: str = "sigmoid",
        residual: bool = False,
    ) -> None:
        super().__init__()
        pyg = import_torch_geometric()
        self.activation = ACTIVATIONS[activation]
        gat = pyg.nn.GATConv
        self.intra = nn.ModuleDict({m: gat(d, out_dim, heads=1, residual=residual) for m, d in in_dims.items()})
        self.inter = InterModal(in_dims, out_dim)
        self.gamma = gamma
        self.dropout = dropout

    def forward(self, xs: dict[str, torch.Tensor], edges: torch.Tensor) -> dict[str, torch.Tensor]:
        intra = {
            m: self.activation(gat(F.dropout(xs[m], self.dropout, self.training), edges))
            for m, gat in self.intra.items()
        }
        inter, _ = self.inter(xs)
        return {m: self.gamma * intra[m] + (1 - self.gamma) * inter[m] for m in intra}


class M2TGLGONet(nn.Module):
    """Spot embeddings H from the modalities' spot graph, gene predictors P, prediction ``H·Pᵀ`` (Eq. 13).

    ``gene_features`` ``(genes, f)`` and ``gene_edges`` ``(2, E)`` define the gene graph of the GO prior;
    without them (``gene_features=None``) every gene has its own free predictor (the "without GO" ablation).
    ``learn_gene_features`` makes the gene node features trainable (initialised with ``gene_features``).
    ``params`` (:class:`M2tglgoParams`) sizes the network: ``hidden``, ``gamma``, ``dropout``, the activations,
    ``residual`` and ``linear_path``.
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        n_genes: int,
        params: M2tglgoParams,
        *,
        gene_features: torch.Tensor | None = None,
        gene_edges: torch.Tensor | None = None,
        learn_gene_features: bool = False,
    ) -> None:
        super().__init__()
        p = params
        hidden = tuple(int(h) for h in p.hidden)
        self.output_activation = ACTIVATIONS[p.output_activation]
        dims = dict(in_dims)
        layers = []
        for width in hidden:
            layers.append(
                MMGELayer(dims, width, gamma=p.gamma, dropout=p.dropout, activation=p.activation, residual=p.residual)
            )
            dims = dict.fromkeys(dims, width)
        self.layers = nn.ModuleList(layers)
        self.fuse = nn.Linear(len(dims) * hidden[-1], hidden[-1])  # W_S of Eq. 6
        if gene_features is None:
            self.predictors = nn.Parameter(torch.randn(n_genes, hidden[-1]) / hidden[-1] ** 0.5)
        else:
            pyg = import_torch_geometric()
            if learn_gene_features:
                self.gene_features = nn.Parameter(gene_features.clone().float())
            else:
                self.register_buffer("gene_features", gene_features.clone().float())
            self.register_buffer("gene_edges", gene_edges.clone().long(), persistent=False)
            self.gene_gat = pyg.nn.GATConv(gene_features.shape[1], hidden[-1], heads=1)
        self.linear_path = LinearPath(sum(in_dims.values()), n_genes) if p.linear_path else None

    def embed(self, xs: dict[str, torch.Tensor], edges: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            xs = layer(xs, edges)
        return self.output_activation(self.fuse(torch.cat([xs[m] for m in xs], dim=1)))

    def gene_predictors(self) -> torch.Tensor:
        if hasattr(self, "predictors"):
            return self.predictors
        return self.gene_gat(self.gene_features, self.gene_edges)

    def predict(self, h: torch.Tensor, xs: dict[str, torch.Tensor], edges: torch.Tensor) -> torch.Tensor:
        """Genes from the spot embeddings ``h`` (``H·Pᵀ``), plus the linear path on the inputs ``xs`` if any."""
        out = h @ self.gene_predictors().T
        if self.linear_path is not None:
            out = out + self.linear_path(torch.cat([xs[m] for m in xs], dim=1), edges)
        return out

    def forward(self, xs: dict[str, torch.Tensor], edges: torch.Tensor) -> torch.Tensor:
        return self.predict(self.embed(xs, edges), xs, edges)


def pair_similarity(h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Eq. 7 on pairs: ``σ(cos(h_i, h_j))`` for each column ``(i, j)`` of ``pairs``."""
    unit = F.normalize(h, dim=-1)
    return torch.sigmoid((unit[pairs[0]] * unit[pairs[1]]).sum(-1))


def reconstruction_loss(
    h: torch.Tensor, edges: torch.Tensor, *, dense_limit: int = 4096, generator=None
) -> torch.Tensor:
    """Eq. 8: mean over all spot pairs of ``(A_ij - σ(cos(h_i, h_j)))²``.

    Exact on an ``N x N`` matrix up to ``dense_limit`` spots; beyond, the edges exactly and the (almost all
    zero) rest from ``16 N`` uniformly drawn pairs, an unbiased estimate in memory O(N + E).
    """
    n = h.shape[0]
    if n <= dense_limit:
        unit = F.normalize(h, dim=-1)
        similarity = torch.sigmoid(unit @ unit.T)
        adjacency = torch.zeros(n, n, device=h.device)
        adjacency[edges[1], edges[0]] = 1.0
        return ((adjacency - similarity) ** 2).mean()
    n_edges = edges.shape[1]
    on_edges = ((1.0 - pair_similarity(h, edges)) ** 2).sum()
    sampled = torch.randint(0, n, (2, 16 * n), device=h.device, generator=generator)
    keys = torch.sort(edges[0] * n + edges[1]).values
    drawn = sampled[0] * n + sampled[1]
    is_edge = keys[torch.searchsorted(keys, drawn).clamp(max=len(keys) - 1)] == drawn
    off_edges = (pair_similarity(h, sampled[:, ~is_edge]) ** 2).mean() * (n * n - n_edges)
    return (on_edges + off_edges) / (n * n)


def neighbourhood_quartiles(
    similarity: torch.Tensor, spot: torch.Tensor, n_spots: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per spot, the 25/50/75/100 % quantiles (linear interpolation) of the similarities of its pairs.

    ``spot`` names the spot of each pair. Returns ``(n_spots, 4)`` quantiles and which spots have pairs.
    """
    by_value = torch.argsort(similarity)
    order = by_value[torch.argsort(spot[by_value], stable=True)]  # grouped by spot, ascending within
    ranked = similarity[order]
    counts = torch.bincount(spot, minlength=n_spots)
    starts = torch.cumsum(counts, 0) - counts
    present = counts > 0
    last = (counts - 1).clamp(min=0).to(similarity.dtype)
    columns = []
    for q in QUARTILES:
        position = last * q
        low = position.floor().long()
        high = position.ceil().long()
        fraction = position - low
        index_low = (starts + low).clamp(max=max(len(ranked) - 1, 0))
        index_high = (starts + high).clamp(max=max(len(ranked) - 1, 0))
        value = ranked[index_low] * (1 - fraction) + ranked[index_high] * fraction if len(ranked) else fraction
        columns.append(value)
    return torch.stack(columns, dim=1), present


def ranking_loss(h: torch.Tensor, hops: list[torch.Tensor], margin: float = 0.01) -> torch.Tensor:
    """SONRM (Eq. 9): each quartile of a spot's similarities must fall with the hop by at least ``margin``.

    ``Σ_q max(0, Q²_q − Q¹_q + ε) + max(0, Q³_q − Q²_q + ε)``, averaged over spots that have neighbours at
    every hop (the paper sums over spots; the mean keeps the weight independent of the slide's size).
    """
    n = h.shape[0]
    quartiles, present = [], torch.ones(n, dtype=torch.bool, device=h.device)
    for pairs in hops:
        values, has = neighbourhood_quartiles(pair_similarity(h, pairs), pairs[0], n)
        quartiles.append(values)
        present &= has
    if not present.any():
        return h.sum() * 0.0
    terms = sum(F.relu(far - near + margin) for near, far in zip(quartiles[:-1], quartiles[1:], strict=True))
    return terms[present].sum(dim=1).mean()


class M2TGLGORegressor(nn.Module):
    """:class:`M2TGLGONet` on standardised inputs, with the objective MSE + reconstruction + ranking (Eq. 15).

    Batches are one slide: ``x`` (deep representation), ``nuclei`` (the 18 nuclei columns), ``edges``
    (kNN), ``hop1..hop3`` (SONRM pairs), and in training ``y``.
    """

    def __init__(self, n_features: int, n_genes: int, params: M2tglgoParams, **gene_prior) -> None:
        super().__init__()
        self.modalities = tuple(params.modalities)  # checked by M2tglgoParams
        self.scale_in = Standardize(n_features)
        self.scale_nuclei = Standardize(18)
        dims = {"deep": n_features, "morphology": 14, "topology": 3}
        self.net = M2TGLGONet({m: dims[m] for m in self.modalities}, n_genes, params, **gene_prior)
        self.weights = (params.reconstruction_weight, params.ranking_weight)
        self.margin = params.margin
        self.dense_limit = params.dense_limit

    def _modalities(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        xs = {}
        if "deep" in self.modalities:
            xs["deep"] = self.scale_in(batch[Key.X])
        nuclei = self.scale_nuclei(batch["nuclei"]) if "nuclei" in batch else None
        for name, columns in NUCLEI_COLUMNS.items():
            if name in self.modalities:
                xs[name] = nuclei[:, columns]
        return xs

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(self._modalities(batch), batch[Key.EDGE_INDEX])

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        xs = self._modalities(batch)
        h = self.net.embed(xs, batch[Key.EDGE_INDEX])
        loss = F.mse_loss(self.net.predict(h, xs, batch[Key.EDGE_INDEX]), batch[Key.Y])
        reconstruction_weight, ranking_weight = self.weights
        if reconstruction_weight:
            loss = loss + reconstruction_weight * reconstruction_loss(
                h, batch[Key.EDGE_INDEX], dense_limit=self.dense_limit
            )
        if ranking_weight:
            hops = [batch[f"hop{r}"] for r in (1, 2, 3) if f"hop{r}" in batch]
            loss = loss + ranking_weight * ranking_loss(h, hops, self.margin)
        return loss
