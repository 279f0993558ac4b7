"""SEPAL (Mejia et al., ICCVW 2023): predict the change from the training mean, then correct it spatially."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from .._inputs import ModelInputs
from .._neural import NeuralModel
from .._nn import Standardize, sinusoidal_2d
from .._train import TRAIN_DEFAULTS, TensorDictDataset, fit_network, predict_network
from ._graph import LocalGraphs, local_graphs
from ._module import SepalGNN

POSITIONS = ("add", "concat")
CONCAT_DIM = 16  # width of the position code when concatenated


class SepalNet(nn.Module):
    """Stage 1 (a linear head on the standardised representation) and stage 2 (the local-graph GNN)."""

    def __init__(self, n_features: int, n_genes: int, *, hidden, conv: str, positions: str, stage2: bool) -> None:
        super().__init__()
        self.scale_in = Standardize(n_features)
        self.head = nn.Linear(n_features, n_genes)  # stage 1: L(I_emb)
        self.positions = positions
        width = n_features + (CONCAT_DIM if positions == "concat" else 0)
        self.gnn = SepalGNN(width, n_genes, hidden=hidden, conv=conv) if stage2 else None

    def local(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.scale_in(x))

    def forward(self, batch) -> torch.Tensor:
        if "edge_index" not in batch:  # stage 1 training and prediction
            return self.local(batch["x"])
        nodes = self.scale_in(batch["x"])
        nodes = nodes + batch["pos"] if self.positions == "add" else torch.cat([nodes, batch["pos"]], dim=1)
        return batch["base"] + self.gnn(nodes, batch["edge_index"], batch["batch"])


class SepalModel(NeuralModel):
    """SEPAL with a linear stage 1 on an ``obsm`` representation (the paper fine-tunes a ViT-B/16 instead).

    Targets are changes from the training mean, scaled per gene. Stage 1 fits a linear head on the spot's
    representation and is then frozen; stage 2 builds, for every spot, the graph of itself and its grid
    neighbours within ``n_hops``, adds (or concatenates) a 2-D sinusoidal code of each node's grid offset
    from the centre, and a GNN with a ``SAGPooling`` readout predicts a correction added to the centre's
    stage-1 prediction. ``model_params``: ``n_hops``, ``conv`` (``'GraphConv'``, ``'GCNConv'``),
    ``hidden``, ``positions`` (``'add'``, ``'concat'``), ``stage2`` (``False``: stage 1 only), ``deltas``
    (``False``: absolute targets) and the shared loop's settings.
    """

    defaults = MappingProxyType(
        {
            **TRAIN_DEFAULTS,
            "lr": 1e-3,
            "max_epochs": 100,
            "patience": 10,
            "batch_size": 256,
            "n_hops": 1,
            "conv": "GraphConv",
            "hidden": (),
            "positions": "add",
            "stage2": True,
            "deltas": True,
        }
    )
    graphs = MappingProxyType({"grid": MappingProxyType({"kind": "grid"})})
    needs_grid = True

    def _net(self) -> SepalNet:
        if self.params["positions"] not in POSITIONS:
            msg = f"positions must be one of {POSITIONS}, got {self.params['positions']!r}."
            raise ValueError(msg)
        return SepalNet(
            self.n_features_,
            self.n_genes_,
            hidden=self.params["hidden"],
            conv=self.params["conv"],
            positions=self.params["positions"],
            stage2=self.params["stage2"],
        )

    def _position_codes(self, offsets: np.ndarray) -> np.ndarray:
        if self.params["positions"] == "concat":
            return sinusoidal_2d(offsets, CONCAT_DIM)
        width = -(-self.n_features_ // 4) * 4  # the encoding needs a multiple of 4 channels
        return sinusoidal_2d(offsets, width)[:, : self.n_features_]

    def _graphs(self, inputs: ModelInputs) -> LocalGraphs:
        grid = np.column_stack([inputs.array_row, inputs.array_col])
        return local_graphs(inputs.graphs["grid"], grid, n_hops=self.params["n_hops"])

    def _collate(self, inputs: ModelInputs, graphs: LocalGraphs, base: np.ndarray, z=None, unit=None):
        features = torch.from_numpy(inputs.features)
        base = torch.from_numpy(base.astype(np.float32))

        def collate(ids: list[int]) -> dict[str, torch.Tensor]:
            ids = np.asarray(ids)
            part = graphs.batch(ids)
            batch = {
                "x": features[part["spots"]],
                "pos": torch.from_numpy(self._position_codes(part["offsets"])),
                "edge_index": torch.from_numpy(part["edge_index"]),
                "batch": torch.from_numpy(part["batch"]),
                "base": base[ids],
            }
            if z is not None:
                batch["y"] = torch.from_numpy(z[ids].astype(np.float32))
                batch["unit"] = torch.from_numpy(unit[ids])
            return batch

        return collate

    def fit(self, inputs: ModelInputs, targets: np.ndarray) -> SepalModel:
        settings = self._begin_fit(inputs, targets)
        # Delta targets: the training mean is subtracted (and added back at prediction); genes are scaled
        self.scale_out_ = Standardize(self.n_genes_)
        self.scale_out_.set(targets)
        if not self.params["deltas"]:
            self.scale_out_.mean.zero_()
        z = (targets - self.scale_out_.mean.numpy()) / self.scale_out_.std.numpy()
        held, held_names, kind, unit = self._held_out(inputs)
        unit = np.unique(unit, return_inverse=True)[1]

        def spots(mask):
            tensors = {"x": torch.from_numpy(inputs.features[mask]), "y": torch.from_numpy(z[mask].astype(np.float32))}
            return TensorDictDataset(**tensors, unit=torch.from_numpy(unit[mask]))

        common = {"device": self.device, "random_state": self.random_state, "trainer_params": self.trainer_params}
        result = fit_network(self.net_, spots(~held), spots(held), settings=settings, **common)
        if self.params["stage2"]:
            for parameter in [*self.net_.head.parameters()]:
                parameter.requires_grad_(False)  # stage 1 is frozen in stage 2
            base = self._local_z(inputs)
            self.net_.train()  # predicting stage 1 left it in eval mode
            graphs = self._graphs(inputs)
            collate = self._collate(inputs, graphs, base, z, unit)
            # the datasets are the centre spots' indices; the collate function assembles their local graphs
            train_ids, val_ids = np.flatnonzero(~held).tolist(), np.flatnonzero(held).tolist()
            result = fit_network(self.net_, train_ids, val_ids, settings=settings, collate_fn=collate, **common)
        self._record_validation(result, z[held], inputs.subset(held), unit[held], held_names, kind)
        return self

    def _local_z(self, inputs: ModelInputs) -> np.ndarray:
        dataset = TensorDictDataset(x=torch.from_numpy(inputs.features))
        return predict_network(self.net_, dataset, device=self.device, precision=self.params["precision"])

    def _predict_z(self, inputs: ModelInputs) -> np.ndarray:
        base = self._local_z(inputs)
        if not self.params["stage2"]:
            return base
        collate = self._collate(inputs, self._graphs(inputs), base)
        return predict_network(
            self.net_,
            list(range(inputs.n_spots)),  # centre spots, in order
            device=self.device,
            precision=self.params["precision"],
            collate_fn=collate,
        )
