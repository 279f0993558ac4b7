"""A multilayer perceptron on each spot's image representation: the neural baseline without spatial context."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from ._inputs import ModelInputs
from ._neural import NeuralModel
from ._nn import Standardize, mlp
from ._train import TRAIN_DEFAULTS, TensorDictDataset, predict_network


class MLPNet(nn.Module):
    """Standardised features -> MLP -> standardised genes (``net(batch)`` reads ``batch['x']``)."""

    def __init__(self, n_features: int, n_genes: int, hidden, dropout: float) -> None:
        super().__init__()
        self.scale_in = Standardize(n_features)
        self.body = mlp(n_features, n_genes, hidden, dropout)

    def forward(self, batch) -> torch.Tensor:
        return self.body(self.scale_in(batch["x"]))


class MLPModel(NeuralModel):
    """Features -> ``hidden`` ReLU layers with dropout -> genes, trained on z-scored targets.

    Trained by the shared loop (AdamW, early stopping on held-out training patients/slides, best epoch
    kept). Parameters (``model_params``): ``hidden``, ``dropout`` and the loop's ``lr``, ``weight_decay``,
    ``max_epochs``, ``patience``, ``max_time`` (s), ``batch_size``, ``loss`` (``'mse'``, ``'pcc'``,
    ``'mse+pcc'``), ``precision``, ``monitor``.
    """

    defaults = MappingProxyType(
        {**TRAIN_DEFAULTS, "hidden": (256,), "dropout": 0.2, "weight_decay": 1e-4, "max_epochs": 100, "patience": 10}
    )

    def _net(self) -> MLPNet:
        return MLPNet(self.n_features_, self.n_genes_, self.params["hidden"], self.params["dropout"])

    def _dataset(self, inputs: ModelInputs, z: np.ndarray | None = None, unit: np.ndarray | None = None):
        tensors = {"x": torch.from_numpy(inputs.features)}
        if z is not None:
            tensors["y"] = torch.from_numpy(z.astype(np.float32))
            tensors["unit"] = torch.from_numpy(np.unique(unit, return_inverse=True)[1])
        return TensorDictDataset(**tensors)

    def fit(self, inputs: ModelInputs, targets: np.ndarray) -> MLPModel:
        settings = self._begin_fit(inputs, targets)
        z = self._standardize_targets(targets)
        held, held_names, kind, unit = self._held_out(inputs)
        result = self._train_net(
            self._dataset(inputs.subset(~held), z[~held], unit[~held]),
            self._dataset(inputs.subset(held), z[held], unit[held]),
            settings,
        )
        self._record_validation(result, z[held], inputs.subset(held), unit[held], held_names, kind)
        return self

    def _predict_z(self, inputs: ModelInputs) -> np.ndarray:
        return predict_network(self.net_, self._dataset(inputs), device=self.device, precision=self.params["precision"])
