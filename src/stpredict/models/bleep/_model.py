"""BLEEP (Xie et al., NeurIPS 2023) as ``model='bleep'``: a joint image-expression embedding, then retrieval."""

from __future__ import annotations

from collections.abc import Mapping
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
from ._module import BLEEP

#: The paper's configuration (Xie et al. 2023; the authors' ``config.py`` and ``BLEEP_main.py``): an
#: ImageNet-pretrained ResNet-50 fine-tuned on 224 px patches, 256-d projections with dropout 0.1,
#: temperature 1, AdamW lr 1e-3 and weight decay 1e-3, batches of 256, 150 epochs; prediction: the mean
#: expression of the 50 references most similar to the patch. GPU-sized, and it downloads the weights.
PAPER_PARAMS = MappingProxyType(
    {
        "arch": "resnet50",
        "pretrained": True,
        "input_size": 224,
        "projection_dim": 256,
        "dropout": 0.1,
        "temperature": 1.0,
        "top_k": 50,
        "lr": 1e-3,
        "weight_decay": 1e-3,
        "batch_size": 256,
        "max_epochs": 150,
        "patience": 150,
    }
)


@dataclass(frozen=True)
class BleepParams(Params):
    """The image encoder (``arch``, initial weights, patch), the projections, the loss and the retrieval."""

    arch: Literal["resnet50", "resnet18", "densenet121"] = "resnet18"  # not the paper's ResNet-50: CPU budget
    checkpoint: str | None = None  # initial weights to fine-tune (a local file, e.g. from st.tl.train_encoder)
    pretrained: bool = False  # or ImageNet's (downloads; the paper's)
    input_size: int = 64  # not the paper's 224: patches resized to 64 px keep CPU training to minutes
    patch_size: float = 224
    patch_unit: Literal["px", "um"] = "px"
    projection_dim: int = 256
    dropout: float = 0.1
    temperature: float = 1.0
    top_k: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.top_k) < 1 or float(self.temperature) <= 0:
            msg = (
                f"top_k must be a positive integer and temperature positive, got {self.top_k!r}, {self.temperature!r}."
            )
            raise ValueError(msg)


class BleepModel(NeuralModel):
    """BLEEP: patches and expression profiles embedded together; a new patch gets its look-alikes' expression.

    A CNN (``arch``) with a projection head embeds each spot's patch; another projection head embeds its
    measured expression (the z-scored predicted genes); both are trained with BLEEP's contrastive loss with
    soft targets (``temperature``). The training spots' expression is the reference bank, saved with the
    model: a spot is predicted as the mean expression of the ``top_k`` references whose expression
    embeddings are most cosine-similar to its patch's embedding. Early stopping on the retrieval's Pearson on
    held-out training groups, which retrieve from the other training spots only; prediction retrieves from
    every training spot.

    The CPU default differs from the paper (``stpredict.models.bleep.PAPER_PARAMS``) where the paper's setting
    needs a GPU and downloaded weights: ResNet18 from random weights on 64 px patches, batches of 128, at
    most 50 epochs. Ablation: ``top_k=1`` (the paper's "simple" retrieval of the single nearest reference).
    """

    Net = BleepParams
    training_defaults = TrainSettings(lr=1e-3, weight_decay=1e-3, max_epochs=50, patience=10, batch_size=128)
    ablations = MappingProxyType({"top_1": {"top_k": 1}})
    needs_images = True
    default_rep = None

    def reads_representation(self) -> bool:
        return False

    def _net(self) -> BLEEP:
        """The architecture with random weights (initial weights are loaded in ``_prepare``, not at load time)."""
        from ...pp._encoders import load_encoder

        n = self.net_params
        trunk, spec = load_encoder(n.arch, random_weights=True)
        trunk.train()  # load_encoder gives a feature extractor in eval mode; here it is trained
        return BLEEP(
            trunk, spec.dim, self.n_genes_, dim=n.projection_dim, dropout=n.dropout, temperature=n.temperature,
            top_k=n.top_k,
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
        # while training, held-out spots retrieve from the other training spots only
        self.net_.bank = torch.from_numpy(z[split.train].astype(np.float32))

    def _finish(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        self._fit_pixels = None
        self.net_.bank = torch.from_numpy(z.astype(np.float32))  # prediction retrieves from every training spot

    def _items(self, inputs: ModelInputs, spots: np.ndarray, z=None, unit=None, *, stage="predict") -> Items:
        pixels = self._fit_pixels if stage != "predict" else self._pixels(inputs)
        return spot_items({Key.PIXELS: pixels}, spots, z, unit)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**super().state_dict(), "bank": self.net_.bank.cpu().numpy()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        super().load_state_dict({k: v for k, v in state.items() if k != "bank"})
        self.net_.bank = torch.from_numpy(np.asarray(state["bank"], dtype=np.float32))
