"""TRIPLEX (Chung et al., CVPR 2024) as ``model='triplex'``: target, neighbour and global views of every spot."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from .._image_training import channel_stats, resized_patches
from .._inputs import ModelInputs
from .._neural import NeuralModel
from .._nn import Standardize
from .._train import TRAIN_DEFAULTS, predict_network, single_item
from ._module import TriplexNet, fusion_loss


class TriplexRegressor(nn.Module):
    """:class:`TriplexNet` with its input scalings; ``forward`` gives the fusion prediction, ``training_loss`` the fusion loss."""

    def __init__(self, n_features: int, n_tile_features: int, n_genes: int, *, alpha: float, **net_params) -> None:
        super().__init__()
        self.scale_in = Standardize(n_features)  # the global view's spot embeddings
        self.scale_tiles = Standardize(n_tile_features)
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))
        self.net = TriplexNet(n_tile_features, n_features, n_genes, **net_params)
        self.alpha = alpha

    def _outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scaled = dict(batch)
        scaled["patches"] = (batch["patches"] - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_std.view(1, 3, 1, 1)
        scaled["tiles"] = self.scale_tiles(batch["tiles"]) * batch["tile_mask"].unsqueeze(-1)
        scaled["spots"] = self.scale_in(batch["spots"])
        return self.net(scaled)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._outputs(batch)["fusion"]

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return fusion_loss(self._outputs(batch), batch["y"], self.alpha)


def grid_cells(inputs: ModelInputs) -> np.ndarray:
    """Each spot's (row, col) cell on its slide's array grid, from 0 (Visium's doubled columns halved)."""
    cells = np.zeros((inputs.n_spots, 2), dtype=np.int64)
    for slide in inputs.slides:
        mask = inputs.library == slide
        rows, cols = inputs.array_row[mask], inputs.array_col[mask]
        if mask.sum() > 1 and len(np.unique((rows + cols) % 2)) == 1:
            cols = cols // 2  # hex grid in doubled-column indexing
        cells[mask] = np.column_stack([rows - rows.min(), cols - cols.min()])
    return cells


class TriplexModel(NeuralModel):
    """TRIPLEX: the spot's patch, its 5 x 5 neighbourhood and all spots of its slide, fused by cross-attention.

    - target view: the spot's patch (``patch_size``, resized to ``target_input_size``) through a ResNet18
      trunk whose feature map becomes tokens, fine-tuned with the model (``freeze_target_cnn=True`` keeps
      it fixed; ``target_checkpoint=`` starts it from a file, e.g. saved by ``st.tl.train_encoder``);
    - neighbour view: ``grid x grid`` tiles of ``tile_size`` around the spot, each embedded by the frozen
      ``tile_method`` of ``st.pp.image_features`` (read from ``obsm`` when ``st.pp.neighbour_features``
      stored them with the same recipe), tiles outside the image masked;
    - global view: the ``obsm`` representation of every spot of the slide, with APEG on the array grid.

    Trained with the fusion loss (``alpha``) by AdamW, batches of spots of one slide sharing that slide's
    global pass; early stopping on held-out training groups.
    """

    defaults = MappingProxyType(
        {
            **TRAIN_DEFAULTS,
            "lr": 1e-4,
            "weight_decay": 1e-4,
            "max_epochs": 50,
            "patience": 10,
            "batch_size": 64,
            "dim": 128,
            "heads": 4,
            "depth_target": 1,
            "depth_neighbour": 1,
            "depth_global": 2,
            "mlp_ratio": 2.0,
            "dropout": 0.1,
            "alpha": 0.3,
            "target_input_size": 64,
            "freeze_target_cnn": False,
            "target_checkpoint": None,
            "patch_size": 224,
            "patch_unit": "px",
            "tile_method": "handcrafted",
            "tile_size": 224,
            "tile_unit": "px",
            "grid": 5,
        }
    )
    needs_grid = True
    needs_images = True

    def _net(self) -> TriplexRegressor:
        p = self.params
        net_params = {k: p[k] for k in ("dim", "heads", "depth_target", "depth_neighbour", "depth_global")}
        return TriplexRegressor(
            self.n_features_,
            self.n_tile_features_,
            self.n_genes_,
            alpha=p["alpha"],
            mlp_ratio=p["mlp_ratio"],
            dropout=p["dropout"],
            grid=p["grid"],
            freeze_target_cnn=p["freeze_target_cnn"],
            **net_params,
        )

    def _views(self, inputs: ModelInputs) -> dict[str, np.ndarray | torch.Tensor]:
        """Every spot's resized patch, neighbour tiles and mask, and grid cell."""
        p = self.params
        batches = inputs.images.iter_patches(size=p["patch_size"], unit=p["patch_unit"])
        tiles, inside = inputs.images.neighbour_features(
            p["tile_method"], tile_size=p["tile_size"], unit=p["tile_unit"], grid=p["grid"]
        )
        return {
            "patches": resized_patches(batches, inputs.n_spots, p["target_input_size"]),
            "tiles": torch.from_numpy(np.asarray(tiles, dtype=np.float32)),
            "tile_mask": torch.from_numpy(np.asarray(inside, dtype=bool)),
            "cells": grid_cells(inputs),
        }

    def _items(self, inputs, views, spots: np.ndarray, *, z=None, unit=None, shuffle_seed=None) -> list[dict]:
        """Batches of ``spots`` (global indices), each from one slide and carrying that slide's global view."""
        features = torch.from_numpy(np.ascontiguousarray(inputs.features, dtype=np.float32))
        items = []
        for slide in inputs.slides:
            members = np.flatnonzero(inputs.library == slide)  # the whole slide: its global view
            slide_spots, slide_cells = features[members], torch.from_numpy(views["cells"][members])
            chosen = spots[np.isin(spots, members)]
            if shuffle_seed is not None:
                chosen = np.random.default_rng(shuffle_seed).permutation(chosen)
            where = np.searchsorted(members, chosen)
            for start in range(0, len(chosen), self.params["batch_size"]):
                ids, rows = (
                    chosen[start : start + self.params["batch_size"]],
                    where[start : start + self.params["batch_size"]],
                )
                item = {
                    "patches": views["patches"][ids],
                    "tiles": views["tiles"][ids],
                    "tile_mask": views["tile_mask"][ids],
                    "spots": slide_spots,  # one tensor shared by every batch of the slide
                    "cells": slide_cells,
                    "index": torch.from_numpy(rows),
                    "ids": torch.from_numpy(ids),
                }
                if z is not None:
                    item["y"] = torch.from_numpy(z[ids].astype(np.float32))
                    item["unit"] = torch.from_numpy(unit[ids])
                items.append(item)
        return items

    def fit(self, inputs: ModelInputs, targets: np.ndarray) -> TriplexModel:
        views = self._views(inputs)
        self.n_tile_features_ = int(views["tiles"].shape[2])
        settings = self._begin_fit(inputs, targets)
        z = self._standardize_targets(targets)
        held, held_names, kind, unit = self._held_out(inputs)
        unit = np.unique(unit, return_inverse=True)[1]
        net = self.net_
        net.scale_tiles.set(
            views["tiles"][torch.from_numpy(~held)][views["tile_mask"][torch.from_numpy(~held)]].numpy()
        )
        mean, std = channel_stats(views["patches"][torch.from_numpy(~held)])
        net.pixel_mean.copy_(torch.tensor(mean))
        net.pixel_std.copy_(torch.tensor(std))
        if self.params["target_checkpoint"] is not None:
            self._load_target_cnn()
        seed = 0 if self.random_state is None else self.random_state
        train = self._items(inputs, views, np.flatnonzero(~held), z=z, unit=unit, shuffle_seed=seed)
        val = self._items(inputs, views, np.flatnonzero(held), z=z, unit=unit)
        result = self._train_net(train, val, settings, collate_fn=single_item)
        self._record_validation(result, z[held], inputs.subset(held), unit[held], held_names, kind)
        return self

    def _load_target_cnn(self) -> None:
        from ...pp._encoders import load_encoder

        loaded, spec = load_encoder("resnet18", checkpoint=self.params["target_checkpoint"])
        trunk = nn.Sequential(*list(loaded.children())[:-2])
        self.net_.net.target.cnn.load_state_dict(trunk.state_dict())
        self.net_.pixel_mean.copy_(torch.tensor(spec.mean))
        self.net_.pixel_std.copy_(torch.tensor(spec.std))

    def _predict_z(self, inputs: ModelInputs) -> np.ndarray:
        views = self._views(inputs)
        items = self._items(inputs, views, np.arange(inputs.n_spots))
        order = torch.cat([item.pop("ids") for item in items]).numpy()
        predicted = predict_network(
            self.net_, items, device=self.device, precision=self.params["precision"], collate_fn=single_item
        )
        out = np.empty_like(predicted)
        out[order] = predicted
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        state["n_tile_features"] = np.array([self.n_tile_features_])
        return state

    def load_state_dict(self, state) -> None:
        self.n_tile_features_ = int(np.asarray(state["n_tile_features"])[0])
        super().load_state_dict({k: v for k, v in state.items() if k != "n_tile_features"})
