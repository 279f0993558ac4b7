"""What models that learn from each spot's patch share (ST-Net, BLEEP): the patch, the trunk's first weights.

A :class:`PatchModel` reads no representation: every spot's patch (``patch_size`` in ``patch_unit``, resized to
``input_size``) is cut once per fit (at prediction, batch by batch) and fed as ``Key.PIXELS``; its network has a CNN ``trunk`` and
``pixel_mean``/``pixel_std`` buffers. The trunk starts from ``checkpoint`` (a local file), the published weights
(``pretrained``) or random weights; pixels are standardised with those weights' statistics, or the training
patches' when the weights are random.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ._data import Items, Key, spot_items
from ._image_training import channel_stats, resized_patches
from ._inputs import ModelInputs
from ._neural import NeuralModel, Split
from ._params import Params


@dataclass(frozen=True)
class PatchParams(Params):
    """The CNN trunk, its first weights and the patch it reads."""

    arch: str = "resnet18"
    checkpoint: str | None = None  # first weights to fine-tune (a local file, e.g. from st.tl.train_encoder)
    pretrained: bool = False  # or the published (ImageNet) weights; downloads
    input_size: int = 64  # patches resized to 64 px keep CPU training to minutes (the papers: 224)
    patch_size: float = 224
    patch_unit: Literal["px", "um"] = "px"


class PatchModel(NeuralModel):
    """A :class:`NeuralModel` on every spot's patch (``Net`` must extend :class:`PatchParams`)."""

    needs_images = True
    default_rep = None

    def reads_representation(self) -> bool:
        return False

    def _trunk(self):
        """The architecture of ``arch`` with random weights, in training mode, and its output width."""
        from ..pp._encoders import load_encoder

        trunk, spec = load_encoder(self.net_params.arch, random_weights=True)
        return trunk.train(), spec.dim  # load_encoder gives a feature extractor in eval mode; here it is trained

    def _pixels(self, inputs: ModelInputs) -> torch.Tensor:
        n = self.net_params
        batches = inputs.images.iter_patches(size=n.patch_size, unit=n.patch_unit)
        return resized_patches(batches, inputs.n_spots, n.input_size)

    def _read_once(self, inputs: ModelInputs) -> torch.Tensor:
        return self._pixels(inputs)  # patches cut once for training and validation

    def _prepare(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        """The trunk's first weights and pixel scaling."""
        n = self.net_params
        if n.checkpoint is not None or n.pretrained:  # loaded here, not in _net: a saved model never downloads
            loaded, mean, std = self._initial_trunk(n.arch, n.checkpoint, n.pretrained)
            self.net_.trunk.load_state_dict(loaded.state_dict())
        else:
            mean, std = channel_stats(self._fit_read[torch.from_numpy(split.train)])
        self._set_pixel_scaling(self.net_, mean, std)

    def _items(self, inputs: ModelInputs, spots: np.ndarray, z=None, unit=None, *, stage="predict") -> Items:
        """The training or validation spots' patches, cut once per fit (prediction streams: see ``_predict_z``)."""
        return spot_items({Key.PIXELS: self._fit_read}, spots, z, unit)

    def _predict_z(self, inputs: ModelInputs) -> np.ndarray:
        """Predictions batch by batch of patches, so that a whole slide's patches are never held at once."""
        n = self.net_params
        out = np.empty((inputs.n_spots, self.n_genes_), dtype=np.float32)
        for library_id, positions, patches in inputs.images.iter_patches(size=n.patch_size, unit=n.patch_unit):
            rows = np.arange(len(positions))
            pixels = resized_patches([(library_id, rows, patches)], len(rows), n.input_size)
            out[positions] = self._run(spot_items({Key.PIXELS: pixels}, rows), rows)
        return out
