"""What the torch models share: z-scored targets, validation records and weights stored as arrays."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .._metrics import per_slide_pearson
from ._base import Model, Validation
from ._inputs import ModelInputs
from ._nn import Standardize
from ._train import TrainResult, TrainSettings, fit_network
from ._validation import held_out_mask, scoring_units


class NeuralModel(Model):
    """A :class:`Model` around a ``torch`` network trained on z-scored genes (MSE then weighs genes equally).

    Subclasses build the network in :meth:`_net` and predict z-scores in :meth:`_predict_z`; fitting sets
    ``net_`` and calls :meth:`_standardize_targets` and :meth:`_record_validation`.
    """

    uses_device = True

    @abstractmethod
    def _net(self) -> nn.Module:
        """A fresh network for ``n_features_`` inputs and ``n_genes_`` outputs."""

    @abstractmethod
    def _predict_z(self, inputs: ModelInputs) -> np.ndarray:
        """z-scored predictions of every spot of ``inputs``, in order."""

    def _begin_fit(self, inputs: ModelInputs, targets: np.ndarray) -> TrainSettings:
        """Shapes recorded, seed set, a fresh ``net_`` whose input scaling is fitted on the training spots."""
        self._record_shapes(inputs, targets)
        torch.manual_seed(0 if self.random_state is None else self.random_state)
        self.net_ = self._net()
        self.net_.scale_in.set(inputs.features)
        return TrainSettings.from_params(self.params)

    def _held_out(self, inputs: ModelInputs) -> tuple[np.ndarray, list[str], str, np.ndarray]:
        """Validation spots of held-out training groups: mask, group names, group kind, scoring unit per spot."""
        held, names, groups, kind = held_out_mask(inputs, random_state=self.random_state)
        return held, names, kind, scoring_units(inputs, groups, kind)

    def _train_net(self, train_set, val_set, settings: TrainSettings, collate_fn=None) -> TrainResult:
        """``net_`` through the shared loop with this model's device, seed, trainer and progress-bar settings."""
        return fit_network(
            self.net_,
            train_set,
            val_set,
            settings=settings,
            device=self.device,
            random_state=self.random_state,
            trainer_params=self.trainer_params,
            show_progress_bar=self.show_progress_bar,
            collate_fn=collate_fn,
        )

    def _standardize_targets(self, targets: np.ndarray) -> np.ndarray:
        self.scale_out_ = Standardize(self.n_genes_)
        self.scale_out_.set(targets)
        return (targets - self.scale_out_.mean.numpy()) / self.scale_out_.std.numpy()

    def _record_validation(
        self,
        result: TrainResult,
        z_held: np.ndarray,
        val_inputs: ModelInputs,
        unit: np.ndarray,
        held,
        kind: str,
        predicted: np.ndarray | None = None,
    ) -> None:
        """Per-gene Pearson of the kept weights on the held-out training groups, and the training curve.

        ``predicted``: the held-out spots' z-scored predictions when the model made them already (else
        ``_predict_z(val_inputs)``).
        """
        predicted = self._predict_z(val_inputs) if predicted is None else predicted
        gene_pearson = per_slide_pearson(z_held, predicted, unit)
        self.validation_ = Validation(
            groups=kind,
            held_out=list(held),
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
