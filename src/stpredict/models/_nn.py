"""Layers and losses shared by the neural models."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn


def pcc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - mean per-gene Pearson`` over the spots of a batch (scale-free; genes with no spread count as 0)."""
    pc = pred - pred.mean(dim=0, keepdim=True)
    tc = target - target.mean(dim=0, keepdim=True)
    r = (pc * tc).sum(dim=0) / (pc.norm(dim=0) * tc.norm(dim=0) + eps)
    return 1.0 - r.mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(pred, target)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": mse_loss,
    "pcc": pcc_loss,
    "mse+pcc": lambda pred, target: mse_loss(pred, target) + pcc_loss(pred, target),
}


def check_loss(name: str) -> str:
    if name not in LOSSES:
        msg = f"Unknown loss {name!r}; choose from {sorted(LOSSES)}."
        raise ValueError(msg)
    return name


def mlp(n_in: int, n_out: int, hidden: Sequence[int] = (256,), dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` per hidden width, then a linear output layer."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
        width = int(h)
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class Standardize(nn.Module):
    """``(x - mean) / std`` with statistics of the training spots kept as buffers (saved with the weights)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def set(self, values: np.ndarray) -> None:
        std = values.std(axis=0)
        self.mean.copy_(torch.as_tensor(values.mean(axis=0), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(np.where(std > 1e-8, std, 1.0), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


class LinearPath(nn.Module):
    """A linear map from a spot's features, and the mean of its graph neighbours' features, to the genes.

    Not in any of the five papers: the "wide" half of wide-and-deep models (Cheng et al. 2016), added to a
    graph network's output. With it a graph model holds ridge's and ridge_spatial's functions exactly, and
    its network only has to learn what they miss (the architecture probes in ``docs/benchmarks.md``: the
    graph networks alone lose part of a spot's own linear signal and of its neighbours' mean).
    :class:`~stpredict.models._neural.NeuralModel` starts it at the ridge fit of the training spots
    (:meth:`set_ridge`), before the network trains; built alone, its weights are zero.
    """

    def __init__(self, n_features: int, n_genes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * n_features, n_genes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def design(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The path's inputs: ``x`` (spots, features), standardised, and its neighbours' mean over ``edge_index``."""
        return torch.cat([x, neighbour_mean(x, edge_index)], dim=1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.linear(self.design(x, edge_index))

    def set_ridge(self, design: np.ndarray, z: np.ndarray) -> float:
        """Weights of the ridge fit of ``z`` on ``design`` (alpha by leave-one-out on these rows); returns alpha."""
        from sklearn.linear_model import RidgeCV

        ridge = RidgeCV(alphas=np.logspace(-2, 5, 15)).fit(design, z)
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(ridge.coef_, dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(ridge.intercept_, dtype=torch.float32))
        return float(ridge.alpha_)


def neighbour_mean(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over each node's incoming edges (zeros for a node without any); self-loops are skipped."""
    source, target = edge_index
    keep = source != target
    source, target = source[keep], target[keep]
    total = torch.zeros_like(x).index_add_(0, target, x[source])
    count = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(
        0, target, torch.ones_like(target, dtype=x.dtype)
    )
    return total / count.clamp(min=1).unsqueeze(1)


def sinusoidal_2d(offsets: np.ndarray, dim: int, base: float = 10000.0) -> np.ndarray:
    """Transformer-style encoding of 2-D positions ``(n, 2)`` into ``(n, dim)`` (``dim`` divisible by 4).

    The first half of the channels encodes the first coordinate, the second half the second; each half
    holds ``sin(p w_k)`` then ``cos(p w_k)`` with ``w_k = base ** (-2k / (dim / 2))``, as the 2-D encoding
    SEPAL adds to its neighbours' embeddings (relative grid offsets from the centre spot).
    """
    if dim % 4:
        msg = f"dim must be divisible by 4 (two coordinates x sin/cos), got {dim}."
        raise ValueError(msg)
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
    half = dim // 2
    frequencies = base ** (-np.arange(0, half, 2) / half)  # half / 2 frequencies per coordinate
    parts = []
    for axis in range(2):
        angles = offsets[:, axis : axis + 1] * frequencies
        parts += [np.sin(angles), np.cos(angles)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def import_torch_geometric():
    """``torch_geometric``, imported without the ``FutureWarning`` it raises at import.

    torch-geometric 2.8 scripts helpers with ``torch.jit.script``, deprecated since torch 2.10: nothing a
    user could act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
        import torch_geometric
        import torch_geometric.nn  # noqa: F401
    return torch_geometric
