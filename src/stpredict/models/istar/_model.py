"""iStar (Zhang et al., Nat. Biotechnol. 2024) as ``model='istar'``: expression per bin, trained on spots.

Each training spot is a bag of the square bins whose centres lie inside it; an ensemble of MLPs predicts
every bin's expression from the bin's image features (its own pixels and their context), and is trained so
that the mean over a spot's bins matches the spot's measured expression. The fitted model predicts spots
(the mean of their bins: the usual contract, so it is cross-validated and compared like any model) and any
bin of any slide: :func:`stpredict.tl.super_resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ...pp._dense import BinGrid, DenseFeatures, features_at, slide_bin_side
from .._inputs import ModelInputs
from .._neural import NeuralModel, Split
from .._params import Params
from .._subspot import SubSpotModel, pad_bags, spot_radius
from .._train import TrainSettings
from ._module import IstarNet

#: The paper's configuration (Zhang et al. 2024; the authors' ``impute.py`` and ``run.sh``): 16-px superpixels
#: at 0.5 µm/px (8 µm bins), four hidden layers of 256 with LeakyReLU(0.1), an ELU(0.01) + 0.01 output, the
#: loss in min-max units of the spots' expression, Adam at 1e-4 for 400 epochs (no early stopping), batches of
#: 128 spots, an ensemble of 5 states whose median is the prediction. The paper's image features come from
#: the HIPT encoder (weights not bundled); here every setting uses the dense features of ``st.pp``.
PAPER_PARAMS = MappingProxyType(
    {
        "bin_um": 8.0,
        "px_per_bin": 16,
        "hidden": [256, 256, 256, 256],
        "slope": 0.1,
        "floor": 0.01,
        "n_states": 5,
        "loss_space": "linear",
        "lr": 1e-4,
        "weight_decay": 0.0,
        "max_epochs": 400,
        "patience": 400,
        "batch_size": 128,
        "linear_start": False,
        "output_floor": "spot_min",
        "bin_output": "linear",
    }
)


@dataclass(frozen=True)
class IstarParams(Params):
    """Bins (``bin_um``, ``px_per_bin``, ``context_um``), the bin MLP, the ensemble and the loss's scale."""

    bin_um: float = 8.0
    px_per_bin: int = 8
    context_um: tuple[float, ...] = (32.0, 128.0)
    hidden: tuple[int, ...] = (128, 128)  # not the paper's 4 x 256 (PAPER_PARAMS): CPU budget
    slope: float = 0.1
    floor: float = 0.01
    n_states: int = 3  # not the paper's 5: CPU budget
    loss_space: Literal["linear", "target"] = "target"  # not the paper's linear (inner validation, docs)
    linear_start: bool = True  # not in the paper: a linear skip started at the spots' ridge fit
    # the output's floor: 'zero' expression (not the paper), or the paper's min-max scaling's lowest training spot
    output_floor: Literal["zero", "spot_min"] = "zero"
    # a bin's output: linear expression in min-max units (the paper), or its log1p value (not in the paper)
    bin_output: Literal["linear", "log"] = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.n_states) < 1 or not self.hidden:
            msg = f"n_states must be at least 1 and hidden non-empty, got {self.n_states!r}, {self.hidden!r}."
            raise ValueError(msg)
        self.dense()  # a wrong bin geometry fails when the model is made

    def dense(self) -> DenseFeatures:
        return DenseFeatures(self.bin_um, int(self.px_per_bin), self.context_um)


class IstarModel(SubSpotModel, NeuralModel):
    """iStar: bins' image features -> an ensemble of MLPs -> bin expression; a spot is the mean of its bins.

    Reads the slides' images (not an ``obsm`` representation): every training spot's bins and their context
    are read from its slide's image on the grid of ``bin_um`` bins (:mod:`stpredict.pp._dense`). Trained by the
    shared loop (early stopping on held-out training patients/slides, which the paper does not do), each
    member on its own loss. Parameters (``model_params``): ``bin_um``, ``px_per_bin``, ``context_um``,
    ``hidden``, ``slope``, ``floor``, ``n_states``, ``loss_space`` (``'linear'``: the paper's, min-max units of
    the linear expression; ``'target'``: the z-scored target layer), and the loop's ``lr``, ``weight_decay``,
    ``max_epochs``, ``patience``, ``max_time``, ``batch_size``, ``precision``, ``monitor``. CPU defaults differ
    from the paper (``stpredict.models.istar.PAPER_PARAMS``) in width, ensemble size, learning rate and epochs.
    """

    Net = IstarParams
    training_defaults = TrainSettings(lr=1e-3, max_epochs=100, patience=10, batch_size=128)
    fixed_training = ("loss",)  # the loss is iStar's (``loss_space``), not the loop's choice
    needs_images = True
    default_rep = None
    ablations = MappingProxyType({"no_context": {"context_um": []}, "one_state": {"n_states": 1}})

    @property
    def dense(self) -> DenseFeatures:
        return self.net_params.dense()

    def reads_representation(self) -> bool:
        return False

    def _net(self) -> IstarNet:
        p = self.net_params
        return IstarNet(
            self.dense.n_features,
            self.n_genes_,
            hidden=p.hidden,
            n_states=int(p.n_states),
            slope=float(p.slope),
            floor=float(p.floor),
            log_target=self.log_target,
            loss_space=p.loss_space,
            linear_skip=bool(p.linear_start),
            bin_output=p.bin_output,
        )

    def _bags(self, inputs: ModelInputs, spots: np.ndarray | None = None):
        return spot_bags(inputs, self.dense, spots)

    def _prepare(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        """Input scaling from the training spots' bins; output units from their expression."""
        bags, mask = self._fit_read
        train_bins = bags[split.train][mask[split.train]]
        self.net_.scale_in.set(train_bins)
        mean, std = self.scale_out_.mean, self.scale_out_.std
        self.net_.out_mean.copy_(mean)
        self.net_.out_std.copy_(std)
        linear = self.net_.to_linear(torch.as_tensor(z[split.train] * std.numpy() + mean.numpy()))
        high = linear.max(dim=0).values
        # the paper's min-max units put a bin's floor at the lowest training spot: a bin emptier than every
        # spot (glass, stroma in an epithelial gene) could not go below it; expression's own floor is zero
        low = linear.min(dim=0).values if self.net_params.output_floor == "spot_min" else torch.zeros_like(high)
        self.net_.lin_min.copy_(low)
        self.net_.lin_range.copy_((high - low).clamp_min(1e-6))
        target = z[split.train] * std.numpy() + mean.numpy()
        self.net_.log_cap.copy_(torch.as_tensor(target.max(axis=0) + 1.0, dtype=torch.float32))
        if self.net_params.linear_start:
            self._start_linear(bags[split.train], mask[split.train], self._start_values(target, linear.numpy()))

    def _start_values(self, target: np.ndarray, linear: np.ndarray) -> np.ndarray:
        """What the members' linear skips are fitted to, per spot: the output before the last activation.

        ``bin_output='log'``: the inverse softplus of the target (``log(expm1(y))``, targets floored at 0.05);
        ``'linear'``: the spots' linear expression in min-max units (the shifted ELU is the identity above 0).
        """
        if self.net_params.bin_output == "log":
            return np.log(np.expm1(np.maximum(target, 0.05)))
        return (linear - self.net_.lin_min.numpy()) / self.net_.lin_range.numpy()

    def _start_linear(self, bags: np.ndarray, mask: np.ndarray, values: np.ndarray) -> None:
        """Every member's linear skip at the ridge fit of the spots' mean bin features to ``values``.

        The ridge penalty acts on the spot means standardised by *their* spread (spot means vary far less than
        bins: penalised on the bins' scale, the fit would lean on small differences of collinear features that
        are noise at the bin). Chosen by efficient leave-one-out (``RidgeCV``) on the training split's spots.
        """
        from sklearn.linear_model import RidgeCV

        scaled = self.net_.scale_in(torch.as_tensor(bags)).numpy()
        weights = mask / mask.sum(axis=1, keepdims=True)
        means = (scaled * weights[..., None]).sum(axis=1)
        centre, spread = means.mean(axis=0), means.std(axis=0) + 1e-6
        ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit((means - centre) / spread, values)
        coef = ridge.coef_ / spread
        for m in self.net_.members:
            m.start_at(coef, ridge.intercept_ - coef @ centre)
        self.linear_start_alpha_ = float(ridge.alpha_)

    def _train_net(self, train, val, settings: TrainSettings):
        """The shared loop with iStar's batch rule: ``min(batch_size, n_training_spots // 16)`` spots a batch."""
        batch = min(int(settings.batch_size), max(1, len(train.order) // 16))
        return super()._train_net(train, val, replace(settings, batch_size=batch))

    # --- sub-spot predictions ----------------------------------------------------------------------------------

    def bin_linear(self, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """``(n_bins, features)`` -> ``(n_bins, genes)`` spot-equivalent linear expression (ensemble median)."""
        return self._linear_in_batches(lambda net, x: net.bin_linear(x), features, batch_size)


def spot_bags(inputs: ModelInputs, dense: DenseFeatures, spots: np.ndarray | None = None):
    """Padded bags of bin features of ``spots`` (default all): ``(n, max_bins, features)`` and a mask ``(n, max_bins)``.

    A spot's bag holds the bins of its slide's ``dense.bin_um`` grid whose centres lie inside the spot's disc
    (``spot_diameter_fullres``); read slide by slide, tile by tile.
    """
    from ...io._image import open_slide_image

    if inputs.images is None:
        msg = "iStar reads the slides' images, but the inputs carry none."
        raise ValueError(msg)
    adata = inputs.images.spots
    spots = np.arange(inputs.n_spots) if spots is None else np.asarray(spots)
    library = np.asarray(inputs.library)[spots]
    members: list[np.ndarray] = [np.empty((0, dense.n_features), np.float32)] * len(spots)
    for slide in pd.unique(library):
        where = np.flatnonzero(library == slide)
        side = slide_bin_side(adata, slide, dense.bin_um)
        radius = spot_radius(adata, slide)
        image, scale = open_slide_image(adata, slide)
        try:
            height, width = image.shape[:2]
            grid = BinGrid.for_image(side * scale, width, height)
            discs = grid.bins_in_discs(inputs.spatial[spots[where]] * scale, radius * scale)
            sizes = np.array([len(d) for d in discs])
            features = features_at(image, grid, dense, np.concatenate(discs))
        finally:
            if not isinstance(image, np.ndarray):
                image.close()
        for i, part in zip(where, np.split(features, np.cumsum(sizes)[:-1]), strict=True):
            members[i] = part
    return pad_bags(members, dense.n_features)
