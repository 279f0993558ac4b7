"""DeepSpot2Cell's network (Nonchev et al. 2025): DeepSets over the nuclei of a spot.

Every nucleus goes through ``phi`` (an ensemble, median), the spot pools its nuclei's embeddings and ``rho``
(an ensemble, mean) maps the pooled embedding to expression on the target's scale; a cell's expression is
``rho`` of its own embedding. ``pooling`` says how a spot is made of its cells:

- ``'sum'`` (the paper): ``rho(sum phi(cells))``. A cell alone is then ``rho`` of one embedding where training
  only ever showed it sums of tens of them;
- ``'mean'`` (not in the paper): ``rho(mean phi(cells))``: a single cell is on the scale ``rho`` was trained on;
- ``'linear_mean'`` (not in the paper): every cell gets ``rho(phi(cell))`` and a spot is the mean of its cells in
  *linear* units (``log1p(mean(expm1(.)))`` for a ``log1p`` target), so the cells of a spot average to the spot
  exactly, as iStar's bins do.

The paper's context branch (``phi`` of the spot's own and its neighbours' patch embeddings, concatenated to
each cell's) is not built: every cell's features here already hold its 32 and 128 µm context windows.
"""

from __future__ import annotations

import torch
from torch import nn

from .._data import Key
from .._nn import Standardize
from .._subspot import BAG_MASK


class Phi(nn.Module):
    """A cell's embedding: ``Linear(d, d) -> Dropout -> ReLU -> Linear(d, width) -> Dropout -> ReLU`` (the paper's)."""

    def __init__(self, n_features: int, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(n_features, n_features), nn.Dropout(dropout), nn.ReLU(),
            nn.Linear(n_features, width), nn.Dropout(dropout), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Rho(nn.Module):
    """Expression from a (pooled) embedding: ``Dropout -> Linear -> ReLU -> Linear -> ReLU -> Dropout`` (the paper's)."""

    def __init__(self, width: int, n_genes: int, dropout: float, output_dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, n_genes), nn.ReLU(), nn.Dropout(output_dropout),
        )  # fmt: skip

    def start_at(self, level: torch.Tensor) -> None:
        """Output bias at ``level`` (the training spots' mean): a ReLU output started at zero may never move."""
        with torch.no_grad():
            self.body[3].bias.copy_(level)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Spot2CellNet(nn.Module):
    """Bags of cell features -> spot expression, z-scored on the target scale (``net(batch)``).

    Buffers (set from the training spots, saved with the weights): the inputs' standardisation and the target
    scale's mean and std (the z-scoring of the shared training loop).
    """

    def __init__(
        self,
        n_features: int,
        n_genes: int,
        *,
        width: int,
        n_ensemble: int,
        dropout: float,
        output_dropout: float,
        pooling: str,
        log_target: bool,
    ) -> None:
        super().__init__()
        self.scale_in = Standardize(n_features)
        self.phi = nn.ModuleList(Phi(n_features, width, dropout) for _ in range(n_ensemble))
        self.rho = nn.ModuleList(Rho(width, n_genes, dropout, output_dropout) for _ in range(n_ensemble))
        self.pooling = pooling
        self.log_target = bool(log_target)
        self.register_buffer("out_mean", torch.zeros(n_genes))
        self.register_buffer("out_std", torch.ones(n_genes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., features)`` -> ``(..., width)``: the median over the ``phi`` ensemble (as the paper)."""
        x = self.scale_in(x)
        return torch.stack([p(x) for p in self.phi]).median(dim=0).values

    def express(self, embedding: torch.Tensor) -> torch.Tensor:
        """Target-scale expression of embeddings: the mean over the ``rho`` ensemble."""
        return torch.stack([r(embedding) for r in self.rho]).mean(dim=0)

    def cell_target(self, x: torch.Tensor) -> torch.Tensor:
        """A cell's expression on the target scale: ``rho(phi(cell))`` (the paper's single-cell inference)."""
        return self.express(self.embed(x))

    def to_linear(self, target: torch.Tensor) -> torch.Tensor:
        return torch.expm1(target).clamp_min(0.0) if self.log_target else target

    def to_target(self, linear: torch.Tensor) -> torch.Tensor:
        return torch.log1p(linear.clamp_min(0.0)) if self.log_target else linear

    def spot_target(self, cells: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(spots, cells, features)`` and their mask -> ``(spots, genes)`` on the target scale."""
        weights = mask.to(cells.dtype)
        if self.pooling == "linear_mean":
            linear = self.to_linear(self.cell_target(cells))
            weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1)
            return self.to_target((linear * weights[..., None]).sum(dim=1))
        if self.pooling == "mean":
            weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1)
        return self.express((self.embed(cells) * weights[..., None]).sum(dim=1))

    def forward(self, batch) -> torch.Tensor:
        return (self.spot_target(batch[Key.X], batch[BAG_MASK]) - self.out_mean) / self.out_std
