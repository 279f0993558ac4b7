"""BLEEP (Xie et al., NeurIPS 2023) as ``model='bleep'``: a joint image-expression embedding, then retrieval."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch

from .._inputs import ModelInputs
from .._neural import Split
from .._patch_model import PatchModel, PatchParams
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
class BleepParams(PatchParams):
    """The image encoder (``arch``, first weights, patch), the projections, the loss and the retrieval."""

    arch: Literal["resnet50", "resnet18", "densenet121"] = "resnet18"  # not the paper's ResNet-50: CPU budget
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


class BleepModel(PatchModel):
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

    def _net(self) -> BLEEP:
        n = self.net_params
        trunk, width = self._trunk()
        return BLEEP(
            trunk, width, self.n_genes_, dim=n.projection_dim, dropout=n.dropout, temperature=n.temperature,
            top_k=n.top_k,
        )  # fmt: skip

    def _prepare(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        super()._prepare(inputs, z, split)
        # while training, held-out spots retrieve from the other training spots only
        self.net_.bank = torch.from_numpy(z[split.train].astype(np.float32))

    def _finish(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        super()._finish(inputs, z, split)
        self.net_.bank = torch.from_numpy(z.astype(np.float32))  # prediction retrieves from every training spot

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**super().state_dict(), "bank": self.net_.bank.cpu().numpy()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        super().load_state_dict({k: v for k, v in state.items() if k != "bank"})
        self.net_.bank = torch.from_numpy(np.asarray(state["bank"], dtype=np.float32))
