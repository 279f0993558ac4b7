"""A multilayer perceptron on each spot's image representation: the neural baseline without spatial context."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._data import Key, spot_items
from ._inputs import ModelInputs
from ._neural import NeuralModel
from ._nn import Standardize, mlp
from ._params import Params
from ._train import TrainSettings


@dataclass(frozen=True)
class MLPParams(Params):
    """The network: ``hidden`` ReLU layers with ``dropout``."""

    hidden: tuple[int, ...] = (256,)
    dropout: float = 0.2


class MLPNet(nn.Module):
    """Standardised features -> MLP -> standardised genes (``net(batch)`` reads ``batch[Key.X]``)."""

    def __init__(self, n_features: int, n_genes: int, params: MLPParams) -> None:
        super().__init__()
        self.scale_in = Standardize(n_features)
        self.body = mlp(n_features, n_genes, params.hidden, params.dropout)

    def forward(self, batch) -> torch.Tensor:
        return self.body(self.scale_in(batch[Key.X]))


class MLPModel(NeuralModel):
    """Features -> ``hidden`` ReLU layers with dropout -> genes, trained on z-scored targets.

    Trained by the shared loop (AdamW, early stopping on held-out training patients/slides, best epoch
    kept). Parameters (``model_params``): ``hidden``, ``dropout`` and the loop's ``lr``, ``weight_decay``,
    ``max_epochs``, ``patience``, ``max_time`` (s), ``batch_size``, ``loss`` (``'mse'``, ``'pcc'``,
    ``'mse+pcc'``), ``precision``, ``monitor``.
    """

    Net = MLPParams
    training_defaults = TrainSettings(weight_decay=1e-4, max_epochs=100, patience=10)

    def _net(self) -> MLPNet:
        return MLPNet(self.n_features_, self.n_genes_, self.net_params)

    def _items(self, inputs: ModelInputs, spots: np.ndarray, z=None, unit=None, *, stage="predict"):
        return spot_items({Key.X: inputs.features}, spots, z, unit)
