"""The one template of the torch models: z-scored targets, held-out training groups, items, the shared loop.

A neural model is this class + a pure ``nn.Module`` (its ``_module.py``) + typed parameters (``Net``, a
:class:`~stpredict.models._params.Params` dataclass, and ``training_defaults``). It writes two methods:

- :meth:`NeuralModel._net`: a fresh network for ``n_features_`` inputs and ``n_genes_`` outputs;
- :meth:`NeuralModel._items`: what the network reads of some spots (``_data.spot_items`` for rows,
  ``_data.slide_items`` for whole slides), with targets when fitting.

and may override :meth:`NeuralModel._read_once` (what is costly to read of every spot, e.g. patches: read once
per fit, kept in ``self._fit_read`` for the training and validation items, dropped after the fit even when it
fails), :meth:`NeuralModel._prepare` (work before the loop: input scalings, a pretraining stage, a reference
bank) and :meth:`NeuralModel._finish` (after it). ``fit`` and ``predict`` are written once, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .._metrics import per_slide_pearson
from ._base import Model, Validation
from ._data import Items, unit_codes
from ._inputs import ModelInputs
from ._nn import LinearPath, Standardize
from ._train import TrainResult, TrainSettings, fit_network, predict_network
from ._validation import held_out_mask, scoring_units

Stage = Literal["train", "val", "predict"]


@dataclass(frozen=True)
class Split:
    """Training spots split for early stopping: the held-out validation groups of the training slides.

    ``unit``: the integer scoring unit of every spot (validation Pearson is computed within it).
    """

    held: np.ndarray
    names: list[str]
    kind: str
    unit: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return np.flatnonzero(~self.held)

    @property
    def val(self) -> np.ndarray:
        return np.flatnonzero(self.held)


class NeuralModel(Model):
    """A :class:`Model` around a ``torch`` network trained on z-scored genes (MSE then weighs genes equally)."""

    uses_device = True
    training_defaults = TrainSettings()  # each model states its own

    def _net(self) -> nn.Module:
        """A fresh network for ``n_features_`` inputs and ``n_genes_`` outputs."""
        raise NotImplementedError

    def _items(
        self, inputs: ModelInputs, spots: np.ndarray, z: np.ndarray | None = None, unit: np.ndarray | None = None,
        *, stage: Stage = "predict",
    ) -> Items:  # fmt: skip
        """What the network reads of ``spots`` (sorted indices into ``inputs``); targets when ``z`` is given."""
        raise NotImplementedError

    def _read_once(self, inputs: ModelInputs) -> Any:
        """What the items of a fit read of every spot and is costly to get (patches, views, nuclei), or ``None``.

        Read before the network is built (it may fix the network's input width) and kept in ``self._fit_read``
        until the fit ends; prediction reads what it needs itself.
        """
        return None

    def _prepare(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        """Work before the training loop (default: none); ``net_`` exists and its input scaling is set."""

    def _finish(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        """Work after training and validation (default: none), e.g. a reference bank of every training spot."""

    # --- the template ----------------------------------------------------------------------------------------

    def fit(self, inputs: ModelInputs, targets: np.ndarray) -> NeuralModel:
        self._fit_read = self._read_once(inputs)
        try:
            settings = self._begin_fit(inputs, targets)
            z = self._standardize_targets(targets)
            split = self._split(inputs)
            self._prepare(inputs, z, split)
            train = self._items(inputs, split.train, z, split.unit, stage="train")
            self._start_linear_path(train, z, split.train)
            val = self._items(inputs, split.val, z, split.unit, stage="val")
            result = self._train_net(train, val, settings)
            self._record_validation(result, z[split.held], self._run(val, split.val), split)
            self._finish(inputs, z, split)
        finally:
            self._fit_read = None  # patches or views of every training spot: not kept with the model
        return self

    def _predict_z(self, inputs: ModelInputs) -> np.ndarray:
        """z-scored predictions of every spot of ``inputs``, in order."""
        spots = np.arange(inputs.n_spots)
        return self._run(self._items(inputs, spots, stage="predict"), spots)

    def _run(self, items: Items, spots: np.ndarray) -> np.ndarray:
        """The network's z-scored output for ``items``, in the order of ``spots``."""
        if len(spots) == 0:
            return np.empty((0, self.n_genes_), dtype=np.float32)
        rows = predict_network(
            self.net_,
            items.batches,
            device=self.device,
            precision=self.train_settings.precision,
            collate_fn=items.collate_fn,
        )
        return items.scatter(rows, spots)

    # --- shared steps ----------------------------------------------------------------------------------------

    def _pretrain(self, network: nn.Module, images: torch.Tensor, targets: torch.Tensor, **stage: Any) -> list[float]:
        """A pretraining stage (a CNN on patches) on the shared loop of ``st.tl.train_encoder``.

        ``stage`` holds what the stage sets itself (``epochs``, ``batch_size``, ``lr``, ``weight_decay``,
        ``desc``); the device, seed, progress bar, ``trainer_params`` and precision are the model's. Returns the
        loss per epoch.
        """
        from ._image_training import train_image_network

        return train_image_network(
            network, images, targets, device=self.device,
            random_state=0 if self.random_state is None else self.random_state,
            show_progress_bar=self.show_progress_bar, trainer_params=self.trainer_params,
            precision=self.train_settings.precision, **stage,
        )  # fmt: skip

    @staticmethod
    def _initial_trunk(arch: str, checkpoint=None, pretrained: bool = False) -> tuple[nn.Module, tuple, tuple]:
        """A trunk's first weights (a checkpoint file or the published weights) and their input mean and std.

        Called when fitting, never when a saved model is built, so that loading a model never downloads.
        """
        from ..pp._encoders import load_encoder

        loaded, spec = load_encoder(arch, checkpoint=checkpoint, pretrained=pretrained)
        return loaded, spec.mean, spec.std

    @staticmethod
    def _set_pixel_scaling(module: nn.Module, mean, std) -> None:
        """The per-channel pixel mean and std a module's ``pixel_mean`` / ``pixel_std`` buffers standardise with."""
        module.pixel_mean.copy_(torch.tensor(mean))
        module.pixel_std.copy_(torch.tensor(std))

    def _begin_fit(self, inputs: ModelInputs, targets: np.ndarray) -> TrainSettings:
        """Shapes recorded, seed set, a fresh ``net_`` whose input scaling is fitted on the training spots."""
        self._record_shapes(inputs, targets)
        torch.manual_seed(0 if self.random_state is None else self.random_state)
        self.net_ = self._net()
        if hasattr(self.net_, "scale_in") and inputs.features.shape[1]:
            self.net_.scale_in.set(inputs.features)
        return self.train_settings

    def _split(self, inputs: ModelInputs) -> Split:
        """Validation spots of held-out training groups, with every spot's scoring unit."""
        held, names, groups, kind = held_out_mask(inputs, random_state=self.random_state)
        return Split(held, names, kind, unit_codes(scoring_units(inputs, groups, kind)))

    def _train_net(self, train: Items, val: Items, settings: TrainSettings) -> TrainResult:
        """``net_`` through the shared loop with this model's device, seed, trainer and progress-bar settings."""
        return fit_network(
            self.net_,
            train.batches,
            val.batches,
            settings=settings,
            device=self.device,
            random_state=self.random_state,
            trainer_params=self.trainer_params,
            show_progress_bar=self.show_progress_bar,
            collate_fn=train.collate_fn,
        )

    def _start_linear_path(self, train: Items, z: np.ndarray, spots: np.ndarray) -> None:
        """A network's :class:`LinearPath`, if it has one, starts at the ridge fit of the training spots.

        Its inputs (the spot's features and its neighbours' mean, as the network builds them) are read by
        running the training items through the network once; the validation spots are not used.
        """
        paths = [m for m in self.net_.modules() if isinstance(m, LinearPath)]
        if not paths or len(spots) < 2:
            return
        designs: list[np.ndarray] = []
        hook = paths[0].register_forward_hook(
            lambda module, args, _: designs.append(module.design(*args).detach().float().cpu().numpy())
        )
        try:
            self._run(train, spots)
        finally:
            hook.remove()
            self.net_.train()  # the loop keeps the module's mode: dropout must be on again
        self.linear_path_alpha_ = paths[0].set_ridge(train.scatter(np.concatenate(designs), spots), z[spots])

    def _standardize_targets(self, targets: np.ndarray) -> np.ndarray:
        self.scale_out_ = Standardize(self.n_genes_)
        self.scale_out_.set(targets)
        return (targets - self.scale_out_.mean.numpy()) / self.scale_out_.std.numpy()

    def _record_validation(self, result: TrainResult, z_held: np.ndarray, predicted: np.ndarray, split: Split) -> None:
        """Per-gene Pearson of the kept weights on the held-out training groups, and the training curve."""
        gene_pearson = per_slide_pearson(z_held, predicted, split.unit[split.held])
        self.validation_ = Validation(
            groups=split.kind,
            held_out=list(split.names),
            score=float(np.nan_to_num(gene_pearson, nan=0.0).mean()),
            gene_pearson=gene_pearson,
            selected={"best_epoch": result.best_epoch, "stopped_early": result.stopped_early},
            history=result.history,
        )

    def predict(self, inputs: ModelInputs) -> np.ndarray:
        return self._predict_z(inputs) * self.scale_out_.std.numpy() + self.scale_out_.mean.numpy()

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        state.update({f"scale_out.{k}": v.numpy() for k, v in self.scale_out_.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.net_ = self._net()
        self.net_.load_state_dict(_prefixed(state, "net."))
        self.scale_out_ = Standardize(self.n_genes_)
        self.scale_out_.load_state_dict(_prefixed(state, "scale_out."))


def _prefixed(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith(prefix)}
