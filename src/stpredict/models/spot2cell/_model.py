"""Cells from spots as ``model='spot2cell'``, in the spirit of DeepSpot2Cell (Nonchev et al. 2025).

Each training spot is a bag of the nuclei segmented inside it (:mod:`stpredict.pp._cells`); a DeepSets
network (:class:`~stpredict.models.spot2cell.Spot2CellNet`) learns the spot's expression from its nuclei and
predicts any nucleus alone. The fitted model predicts spots (from the nuclei inside them: the usual contract,
so it is cross-validated and compared like any model) and the nuclei of any slide:
``st.tl.super_resolve(predictor, adata, cells=True)``.

Where DeepSpot2Cell embeds each cell with a foundation model (e.g. Phikon-v2 on a cell-centred crop), a cell
here is described by the colour and texture statistics of the 8 µm bins under its nucleus, their 32 and 128 µm
context, and the nucleus' own size, staining, shape and crowding: no weights are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ...pp._cells import CellFeatures, cells_in_discs
from ...pp._dense import BinGrid, DenseFeatures, features_at, slide_bin_side
from .._inputs import ModelInputs
from .._neural import NeuralModel, Split
from .._params import Params
from .._subspot import SubSpotModel, pad_bags, spot_radius
from .._train import TrainSettings
from ._module import Spot2CellNet

#: The paper's configuration (DeepSpot2Cell, the authors' ``configs/training.example.yaml`` and ``model.py``):
#: ensembles of 8 ``phi`` and 8 ``rho``, a 512-wide embedding, dropout 0.3 (0.1 after ``rho``'s output), sum
#: pooling, Adam at 1e-4 with weight decay 1e-6, batches of 4 spots, 50 epochs with early stopping after 5.
PAPER_PARAMS = MappingProxyType(
    {
        "pooling": "sum",
        "width": 512,
        "n_ensemble": 8,
        "dropout": 0.3,
        "output_dropout": 0.1,
        "lr": 1e-4,
        "weight_decay": 1e-6,
        "batch_size": 4,
        "max_epochs": 50,
        "patience": 5,
    }
)


@dataclass(frozen=True)
class Spot2CellParams(Params):
    """The cells' features (``bin_um``, ``px_per_bin``, ``context_um``) and the DeepSets network."""

    bin_um: float = 8.0
    px_per_bin: int = 8
    context_um: tuple[float, ...] = (32.0, 128.0)
    # how a spot is made of its cells: the paper's 'sum' of embeddings, or (not the paper) their 'mean', or the
    # mean of the cells' own predictions in linear units ('linear_mean', chosen on planted cells: docs)
    pooling: Literal["sum", "mean", "linear_mean"] = "linear_mean"
    width: int = 128  # not the paper's 512: CPU budget
    n_ensemble: int = 3  # not the paper's 8: CPU budget
    dropout: float = 0.1  # not the paper's 0.3: small training sets and few epochs
    output_dropout: float = 0.0  # the paper drops 10 % of the outputs in training; not by default

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.n_ensemble) < 1 or int(self.width) < 1:
            msg = f"n_ensemble and width must be at least 1, got {self.n_ensemble!r}, {self.width!r}."
            raise ValueError(msg)
        for name in ("dropout", "output_dropout"):
            if not 0 <= float(getattr(self, name)) < 1:
                msg = f"{name} must be a fraction in [0, 1), got {getattr(self, name)!r}."
                raise ValueError(msg)
        self.cells()  # a wrong bin geometry fails when the model is made

    def cells(self) -> CellFeatures:
        return CellFeatures(DenseFeatures(self.bin_um, int(self.px_per_bin), self.context_um))


class Spot2CellModel(SubSpotModel, NeuralModel):
    """DeepSets over the nuclei of each spot; predicts spots (from their nuclei) and single nuclei.

    Reads the slides' images (not an ``obsm`` representation): the nuclei of every training spot are segmented
    from its slide's image, tile by tile. Trained by the shared loop (z-scored targets, early stopping on
    held-out training patients/slides). Parameters (``model_params``): ``bin_um``, ``px_per_bin``,
    ``context_um`` (the cells' bin features), ``pooling``, ``width``, ``n_ensemble``, ``dropout``,
    ``output_dropout``, and the loop's ``lr``, ``weight_decay``, ``max_epochs``, ``patience``, ``max_time``,
    ``batch_size``, ``precision``, ``monitor``. CPU defaults differ from the paper
    (``stpredict.models.spot2cell.PAPER_PARAMS``) in pooling, width, ensemble size and dropout.
    """

    Net = Spot2CellParams
    training_defaults = TrainSettings(lr=1e-3, max_epochs=100, patience=10, batch_size=32)
    needs_images = True
    default_rep = None
    predicts_bins = False
    ablations = MappingProxyType({"no_context": {"context_um": []}, "sum_pooling": {"pooling": "sum"}})

    @property
    def cell_features(self) -> CellFeatures:
        return self.net_params.cells()

    @property
    def dense(self) -> DenseFeatures:
        return self.cell_features.dense

    def reads_representation(self) -> bool:
        return False

    def _net(self) -> Spot2CellNet:
        p = self.net_params
        return Spot2CellNet(
            self.cell_features.n_features,
            self.n_genes_,
            width=int(p.width),
            n_ensemble=int(p.n_ensemble),
            dropout=float(p.dropout),
            output_dropout=float(p.output_dropout),
            pooling=p.pooling,
            log_target=self.log_target,
        )

    def _bags(self, inputs: ModelInputs, spots: np.ndarray | None = None):
        return spot_cell_bags(inputs, self.cell_features, spots)

    def _prepare(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        """Input scaling from the training spots' cells; output units and ``rho``'s starting level from their expression."""
        bags, mask = self._fit_read
        self.net_.scale_in.set(bags[split.train][mask[split.train]])
        mean, std = self.scale_out_.mean, self.scale_out_.std
        self.net_.out_mean.copy_(mean)
        self.net_.out_std.copy_(std)
        target = torch.as_tensor(z[split.train] * std.numpy() + mean.numpy(), dtype=torch.float32)
        for rho in self.net_.rho:
            rho.start_at(target.mean(dim=0).clamp_min(0.0))

    def cell_linear(self, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """``(n_cells, features)`` -> ``(n_cells, genes)`` linear expression of single cells."""
        return self._linear_in_batches(lambda net, x: net.to_linear(net.cell_target(x)), features, batch_size)

    def cells_linear(self, cells) -> np.ndarray:
        return self.cell_linear(cells.features())


def spot_cell_bags(inputs: ModelInputs, cells: CellFeatures, spots: np.ndarray | None = None):
    """Padded bags of the features of the nuclei inside ``spots`` (default all): ``(n, max_cells, features)``, mask.

    A spot's bag holds the nuclei of its slide whose centroid lies inside the spot's disc
    (``spot_diameter_fullres``); only the spots' boxes are segmented. A spot where no nucleus is found
    gets one stand-in cell: the bin under its centre, flagged as no nucleus.
    """
    from ...io._image import open_slide_image

    if inputs.images is None:
        msg = "spot2cell reads the slides' images, but the inputs carry none."
        raise ValueError(msg)
    adata, dense = inputs.images.spots, cells.dense
    spots = np.arange(inputs.n_spots) if spots is None else np.asarray(spots)
    library = np.asarray(inputs.library)[spots]
    members: list[np.ndarray] = [np.empty((0, cells.n_features), np.float32)] * len(spots)
    for slide in pd.unique(library):
        where = np.flatnonzero(library == slide)
        side = slide_bin_side(adata, slide, dense.bin_um)
        image, scale = open_slide_image(adata, slide)
        try:
            height, width = image.shape[:2]
            grid = BinGrid.for_image(side * scale, width, height)
            centres, radius = inputs.spatial[spots[where]] * scale, spot_radius(adata, slide) * scale
            found = cells_in_discs(image, grid, cells, centres, radius)
            for i, part in zip(where, found, strict=True):
                members[i] = part
            empty = [i for i in where if not len(members[i])]
            if empty:
                centre_bins = np.column_stack(grid.index(*inputs.spatial[spots[empty]].T * scale))
                stand_in = cells.empty_spot(features_at(image, grid, dense, centre_bins))
                for i, row in zip(empty, stand_in, strict=True):
                    members[i] = row[None]
        finally:
            if not isinstance(image, np.ndarray):
                image.close()
    return pad_bags(members, cells.n_features)
