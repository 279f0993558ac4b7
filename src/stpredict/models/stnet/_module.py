"""ST-Net's network: a CNN on a spot's patch, a linear layer to the genes (tensors only)."""

from __future__ import annotations

import torch
from torch import nn

from .._data import Key
from .._image_training import dihedral_average, random_dihedral


class STNet(nn.Module):
    """Standardised patch -> CNN trunk (pooled features) -> linear layer -> z-scored genes.

    In training every patch is shown in a random one of its 8 orientations; in evaluation the prediction is
    the mean over the 8 (``average_orientations``, the public code's ``--average``). ``optimizer`` is SGD with
    momentum (the paper's) or AdamW.
    """

    def __init__(
        self,
        trunk: nn.Module,
        width: int,
        n_genes: int,
        *,
        average_orientations: bool = True,
        optimizer: str = "adamw",
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(width, n_genes)
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))
        self.average_orientations = average_orientations
        self.optimizer_name, self.momentum = optimizer, momentum

    def _predict(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(pixels))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = (batch[Key.PIXELS] - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_std.view(1, 3, 1, 1)
        if self.training:
            return self._predict(random_dihedral(pixels))
        if self.average_orientations:
            return dihedral_average(self._predict, pixels)
        return self._predict(pixels)

    def optimizer(self, settings) -> torch.optim.Optimizer:
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(
                self.parameters(), lr=settings.lr, momentum=self.momentum, weight_decay=settings.weight_decay
            )
        return torch.optim.AdamW(self.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
