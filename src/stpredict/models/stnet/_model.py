"""ST-Net (He et al., Nat. Biomed. Eng. 2020) as ``model='stnet'``: a CNN fine-tuned on each spot's patch."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch

from .._data import Items, Key, spot_items
from .._image_training import channel_stats, resized_patches
from .._inputs import ModelInputs
from .._neural import NeuralModel, Split
from .._params import Params
from .._train import TrainSettings
from ._module import STNet

#: The paper's configuration (He et al. 2020; public code's README): an ImageNet-pretrained DenseNet-121 on
#: 224 x 224 px patches, the 250 most expressed genes (log of normalised counts), SGD lr 1e-6 with momentum
#: 0.9, batches of 32, 50 epochs, the prediction averaged over the 8 orientations. GPU-sized, and it
#: downloads the ImageNet weights.
PAPER_PARAMS = MappingProxyType(
    {
        "arch": "densenet121",
        "pretrained": True,
        "input_size": 224,
        "optimizer": "sgd",
        "momentum": 0.9,
        "lr": 1e-6,
        "weight_decay": 0.0,
        "batch_size": 32,
        "max_epochs": 50,
        "patience": 50,
        "average_orientations": True,
    }
)


@dataclass(frozen=True)
class StnetParams(Params):
    """The CNN (``arch``, its initial weights), the patch it reads and the optimiser."""

    # not the paper's DenseNet-121 (PAPER_PARAMS): a ResNet18 trains 2.2x faster per patch on CPU (64 px, batch 32)
    arch: Literal["densenet121", "resnet18", "resnet50"] = "resnet18"
    checkpoint: str | None = None  # initial weights to fine-tune (a local file, e.g. from st.tl.train_encoder)
    pretrained: bool = False  # or ImageNet's (downloads; the paper's)
    input_size: int = 64  # not the paper's 224: patches resized to 64 px keep CPU training to minutes
    patch_size: float = 224
    patch_unit: Literal["px", "um"] = "px"
    average_orientations: bool = True
    optimizer: Literal["adamw", "sgd"] = "adamw"  # not the paper's SGD at 1e-6: far too slow from random weights
    momentum: float = 0.9


class StnetModel(NeuralModel):
    """ST-Net: each spot's patch through a CNN fine-tuned to predict the genes, no spatial context.

    The baseline of every seed paper: ``arch`` (DenseNet-121, the paper's; or a ResNet) from ``checkpoint``,
    ImageNet weights (``pretrained=True``, downloads) or random weights; patches of ``patch_size`` resized to
    ``input_size``; random orientations in training and the mean over the 8 at prediction; MSE on z-scored
    genes; early stopping on held-out training groups. Pixels are standardised with the weights' own
    statistics (ImageNet's), or the training patches' when the weights are random.

    The CPU default differs from the paper (``stpredict.models.stnet.PAPER_PARAMS``) where the paper's
    setting needs a GPU and downloaded weights: a ResNet18 on 64 px inputs from random weights, AdamW at 1e-3
    (SGD at 1e-6 barely moves random weights).

    Ablation: ``average_orientations=False`` (one orientation at prediction).
    """

    Net = StnetParams
    training_defaults = TrainSettings(lr=1e-3, weight_decay=1e-4, max_epochs=30, patience=5, batch_size=32)
    ablations = MappingProxyType({"no_tta": {"average_orientations": False}})
    needs_images = True
    default_rep = None

    def reads_representation(self) -> bool:
        return False

    def _net(self) -> STNet:
        """The architecture with random weights (initial weights are loaded in ``_prepare``, not at load time)."""
        from ...pp._encoders import load_encoder

        n = self.net_params
        trunk, spec = load_encoder(n.arch, random_weights=True)
        trunk.train()  # load_encoder gives a feature extractor in eval mode; here it is trained
        return STNet(
            trunk, spec.dim, self.n_genes_, average_orientations=n.average_orientations, optimizer=n.optimizer,
            momentum=n.momentum,
        )  # fmt: skip

    def _pixels(self, inputs: ModelInputs) -> torch.Tensor:
        n = self.net_params
        batches = inputs.images.iter_patches(size=n.patch_size, unit=n.patch_unit)
        return resized_patches(batches, inputs.n_spots, n.input_size)

    def _prepare(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        from ...pp._encoders import load_encoder

        n = self.net_params
        self._fit_pixels = self._pixels(inputs)  # read once for training and validation
        if n.checkpoint is not None or n.pretrained:  # fine-tune from these weights, with their input scaling
            loaded, spec = load_encoder(n.arch, checkpoint=n.checkpoint, pretrained=n.pretrained)
            self.net_.trunk.load_state_dict(loaded.state_dict())
            mean, std = spec.mean, spec.std
        else:
            mean, std = channel_stats(self._fit_pixels[torch.from_numpy(split.train)])
        self.net_.pixel_mean.copy_(torch.tensor(mean))
        self.net_.pixel_std.copy_(torch.tensor(std))

    def _finish(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        self._fit_pixels = None

    def _items(self, inputs: ModelInputs, spots: np.ndarray, z=None, unit=None, *, stage="predict") -> Items:
        pixels = self._fit_pixels if stage != "predict" else self._pixels(inputs)
        return spot_items({Key.PIXELS: pixels}, spots, z, unit)
