"""TRIPLEX (Chung et al., CVPR 2024) as ``model='triplex'``: target, neighbour and global views of every spot."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from ..._recipe import FeatureRecipe
from .._data import Items, Key, with_targets
from .._image_training import channel_stats, resized_patches, run_in_batches
from .._inputs import ModelInputs, SlideImages
from .._neural import NeuralModel, Split
from .._train import TrainSettings
from ._module import TriplexRegressor
from ._params import TriplexParams

#: The paper's HER2ST configuration (Chung et al. 2024, Sec. 4.1; public code ``config/ST/andersson``):
#: 224 px patches through the fine-tuned ResNet18 (7 x 7 tokens, linear projection, no target blocks),
#: 512-d tokens, 3 neighbour and 3 global blocks, batch 128, AdamW 1e-4, early stopping patience 20 over
#: at most 1000 epochs. Heads, MLP ratio and dropout are one value per model here; the public code sets
#: them per encoder (global/neighbour 16 heads, MLP ratio 4/1, dropout 0.1/0.3; fusion 4 heads, 0.2).
#: 33 M weights (the CPU default: 12 M, 11.2 M of them the ResNet18) and 12x the CPU default's pixels per spot: a GPU configuration.
PAPER_PARAMS = MappingProxyType(
    {
        "dim": 512,
        "heads": 16,
        "depth_target": 0,
        "depth_neighbour": 3,
        "depth_global": 3,
        "depth_fusion": 2,
        "mlp_ratio": 4.0,
        "dropout": 0.1,
        "target_input_size": 224,
        "patch_size": 224,
        "tile_size": 224,
        "batch_size": 128,
        "lr": 1e-4,
        "max_epochs": 1000,
        "patience": 20,
        "freeze_target_cnn": False,
        "target_pretrain_epochs": 0,
    }
)


VIEW_KEYS = ("patches", "target_maps", "tiles", "tile_mask")  # per-spot inputs, sliced into every batch


def neighbour_views(
    images: SlideImages, method: str = "handcrafted", *, tile_size: float = 224, unit: str = "px", grid: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """TRIPLEX's neighbour view of these spots: ``(features (n, grid², f), inside-the-image mask (n, grid²))``.

    Read from ``obsm`` when ``st.pp.neighbour_features`` stored them with the same recipe (method, tile size,
    unit, grid, no checkpoint), else computed from the pixels.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> from stpredict.models._inputs import build_inputs
    >>> adata = st.datasets.her2st_crop()[:3].copy()
    >>> inputs, _ = build_inputs(adata, np.zeros((3, 1)), needs_images=True)
    >>> tiles, inside = neighbour_views(inputs.images, tile_size=32)
    >>> tiles.shape, inside.shape
    ((3, 25, 44), (3, 25))
    """
    from ...pp._views import neighbour_features

    key = images.stored(FeatureRecipe(method, size=tile_size, unit=unit, grid=grid))
    if key is not None:
        return np.asarray(images.spots.obsm[key]), np.asarray(images.spots.obsm[f"{key}_mask"])
    computed = neighbour_features(
        images.spots, method=method, tile_size=tile_size, unit=unit, grid=grid, key_added="view", copy=True,
        target_mpp=images.target_mpp, show_progress_bar=False,
    )  # fmt: skip
    return computed.obsm["view"], computed.obsm["view_mask"]


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
      trunk whose feature map becomes tokens, then transformer blocks. The paper fine-tunes a
      histology-pretrained trunk (:data:`PAPER_PARAMS`: ``freeze_target_cnn=False``, with
      ``target_checkpoint=`` a file, e.g. saved by ``st.tl.train_encoder``). The CPU default first trains
      the trunk on the training patches for ``target_pretrain_epochs`` (a linear head predicting the genes,
      the loop of ``st.tl.train_encoder``), then freezes it, so its maps are computed once per spot;
    - neighbour view: ``grid x grid`` tiles of ``tile_size`` around the spot, each embedded by the frozen
      ``tile_method`` of ``st.pp.image_features`` (read from ``obsm`` when ``st.pp.neighbour_features``
      stored them with the same recipe), tiles outside the image masked;
    - global view: the ``obsm`` representation of every spot of the slide, with APEG on the array grid.

    Trained with the fusion loss (``alpha``) by AdamW, batches of spots of one slide sharing that slide's
    global pass; early stopping on held-out training groups.

    Ablations (the paper's Tables 3-5): ``views`` (any non-empty subset of ``('target', 'neighbour',
    'global')``; without ``'global'`` no representation is read), ``position_encoding`` (``'apeg'``,
    ``'peg'``, ``'none'``), ``fusion`` (``'cross_attention'``, ``'sum'``, ``'concat'``), ``fusion_loss=False``
    (MSE of the fused prediction only).
    """

    Net = TriplexParams
    # lr: the paper's 1e-4 was still improving after 50 epochs on a HER2ST validation slide
    training_defaults = TrainSettings(lr=3e-4, weight_decay=1e-4, max_epochs=100, patience=10, batch_size=64)
    #: the paper's ablations (Tables 3-5) as ``model_params``
    ablations = MappingProxyType(
        {
            "no_target": {"views": ["neighbour", "global"]},
            "no_neighbour": {"views": ["target", "global"]},
            "no_global": {"views": ["target", "neighbour"]},
            "no_peg": {"position_encoding": "none"},
            "peg": {"position_encoding": "peg"},
            "sum": {"fusion": "sum"},
            "concat": {"fusion": "concat"},
            "no_fusion_loss": {"fusion_loss": False},
        }
    )
    needs_grid = True
    needs_images = True

    def reads_representation(self) -> bool:
        return "global" in self.net_params.views

    def reads_pixels(self) -> bool:
        return bool({"target", "neighbour"} & set(self.net_params.views))

    def _net(self) -> TriplexRegressor:
        return TriplexRegressor(self.n_features_, self.n_tile_features_, self.n_genes_, self.net_params)

    def _views(self, inputs: ModelInputs) -> dict[str, np.ndarray | torch.Tensor]:
        """What the chosen views read of every spot: resized patch, neighbour tiles and mask, grid cell."""
        p = self.net_params
        views = {"cells": grid_cells(inputs)}
        if "target" in p.views:
            batches = inputs.images.iter_patches(size=p.patch_size, unit=p.patch_unit)
            views["patches"] = resized_patches(batches, inputs.n_spots, p.target_input_size)
        if "neighbour" in p.views:
            tiles, inside = neighbour_views(
                inputs.images, p.tile_method, tile_size=p.tile_size, unit=p.tile_unit, grid=p.grid
            )
            views["tiles"] = torch.from_numpy(np.asarray(tiles, dtype=np.float32))
            views["tile_mask"] = torch.from_numpy(np.asarray(inside, dtype=bool))
        return views

    def _items(self, inputs: ModelInputs, spots: np.ndarray, z=None, unit=None, *, stage="predict") -> Items:
        """Batches of ``spots``, each from one slide and carrying that slide's global view (all its spots)."""
        views = self._fit_read if stage != "predict" else self._frozen_views(inputs)
        shuffle_seed = (0 if self.random_state is None else self.random_state) if stage == "train" else None
        features = torch.from_numpy(np.ascontiguousarray(inputs.features, dtype=np.float32))
        batches, order = [], []
        size = self.train_settings.batch_size
        for slide in inputs.slides:
            members = np.flatnonzero(inputs.library == slide)  # the whole slide: its global view
            slide_spots, slide_cells = features[members], torch.from_numpy(views["cells"][members])
            chosen = spots[np.isin(spots, members)]
            if shuffle_seed is not None:
                chosen = np.random.default_rng(shuffle_seed).permutation(chosen)
            where = np.searchsorted(members, chosen)
            for start in range(0, len(chosen), size):
                ids, rows = chosen[start : start + size], where[start : start + size]
                item = {key: views[key][ids] for key in VIEW_KEYS if key in views}
                # one slide tensor shared by every batch of the slide
                item.update({"spots": slide_spots, "cells": slide_cells, Key.INDEX: torch.from_numpy(rows)})
                batches.append(with_targets(item, ids, z, unit))
                order.append(ids)
        return Items(batches, np.concatenate(order) if order else np.empty(0, np.int64), whole_batches=True)

    def _frozen_views(self, inputs: ModelInputs) -> dict:
        views = self._views(inputs)
        self._freeze_target_maps(views)
        return views

    def _read_once(self, inputs: ModelInputs) -> dict:
        views = self._views(inputs)
        self.n_tile_features_ = int(views["tiles"].shape[2]) if "tiles" in views else 0  # the network's tile width
        return views

    def _prepare(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        views = self._fit_read
        self._fit_input_scaling(views, torch.from_numpy(~split.held))
        p = self.net_params
        if "patches" in views and p.target_pretrain_epochs and p.target_checkpoint is None:
            self._pretrain_target_cnn(views["patches"], z, ~split.held)
        self._freeze_target_maps(views)

    def _fit_input_scaling(self, views, train: torch.Tensor) -> None:
        """Tile features and pixels standardised with the training spots' statistics (or the checkpoint's)."""
        net = self.net_
        if "tiles" in views:
            net.scale_tiles.set(views["tiles"][train][views["tile_mask"][train]].numpy())
        if "patches" in views:
            self._set_pixel_scaling(net, *channel_stats(views["patches"][train]))
        if self.net_params.target_checkpoint is not None:
            self._load_target_cnn()

    def _pretrain_target_cnn(self, patches: torch.Tensor, z: np.ndarray, train: np.ndarray) -> None:
        """Train the target trunk + a linear head on the training spots' augmented patches to predict the genes.

        The CPU stand-in for the paper's histology-pretrained ResNet18 (not downloadable offline): the loop
        of ``st.tl.train_encoder`` and SEPAL's stage 1, on training slides only.
        """
        encoder = self.net_.net.encoders["target"]
        network = nn.Sequential(
            encoder.cnn, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(encoder.project.in_features, z.shape[1])
        )
        encoder.cnn.requires_grad_(True)
        self.target_pretrain_history_ = self._pretrain(
            network,
            self.net_.scale_pixels(patches[torch.from_numpy(train)]),
            torch.from_numpy(z[train].astype(np.float32)),
            epochs=self.net_params.target_pretrain_epochs,
            batch_size=32,
            lr=self.net_params.target_pretrain_lr,
            weight_decay=self.train_settings.weight_decay,
            desc="TRIPLEX target CNN",
        )
        encoder.cnn.requires_grad_(not encoder.freeze_cnn)
        encoder.cnn.cpu()

    def _freeze_target_maps(self, views: dict, batch_size: int = 256) -> None:
        """A frozen trunk runs once per spot: its feature maps replace the patches in the views."""
        encoder = self.net_.net.encoders["target"] if "target" in self.net_.net.encoders else None
        if encoder is None or not encoder.freeze_cnn or "patches" not in views:
            return
        self.net_.to(self.device)  # the trunk and the pixel statistics it reads
        maps = run_in_batches(
            lambda chunk: encoder.feature_maps(self.net_.scale_pixels(chunk)),
            views.pop("patches"),
            device=self.device,
            batch_size=batch_size,
        )
        self.net_.cpu()
        encoder.cnn.train()  # unused from here on; train mode keeps Lightning from warning about eval modules
        views["target_maps"] = torch.cat(maps)

    def _load_target_cnn(self) -> None:
        loaded, mean, std = self._initial_trunk("resnet18", checkpoint=self.net_params.target_checkpoint)
        trunk = nn.Sequential(*list(loaded.children())[:-2])  # the feature maps: no pooling, no classifier
        self.net_.net.encoders["target"].cnn.load_state_dict(trunk.state_dict())
        self._set_pixel_scaling(self.net_, mean, std)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        state["n_tile_features"] = np.array([self.n_tile_features_])
        return state

    def load_state_dict(self, state) -> None:
        self.n_tile_features_ = int(np.asarray(state["n_tile_features"])[0])
        super().load_state_dict({k: v for k, v in state.items() if k != "n_tile_features"})
