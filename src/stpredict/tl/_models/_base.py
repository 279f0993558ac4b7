"""What every model shares: the data it receives, its interface, and the registry behind ``model=``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from anndata import AnnData


@dataclass
class SpotData:
    """Spots handed to a model: the image representation plus what graph/context models need.

    ``targets`` is ``None`` for slides to predict. ``adata`` is the caller's AnnData (read-only by
    contract) for models that need patches, grids or images.
    """

    features: np.ndarray
    library: np.ndarray
    patient: np.ndarray
    spatial: np.ndarray
    adata: AnnData
    targets: np.ndarray | None = None


class Model(ABC):
    """A spatial expression predictor. Subclasses register themselves with :func:`register_model`."""

    name: ClassVar[str]
    #: ``obsm`` representation used when ``use_rep=None`` (computed from the image if missing)
    default_rep: ClassVar[str | None] = "X_handcrafted"
    #: whether the model runs on torch and honours ``device``
    uses_device: ClassVar[bool] = False

    def __init__(self, *, random_state: int | None = 0, device: str = "cpu", **params: Any) -> None:
        self.random_state = random_state
        self.device = device
        self.params = params
        #: what the model learned about itself on training slides only (chosen hyper-parameters, scores)
        self.validation_: dict[str, Any] = {}

    @abstractmethod
    def fit(self, train: SpotData) -> Model:
        """Learn from training spots (``train.targets`` is set)."""

    @abstractmethod
    def predict(self, test: SpotData) -> np.ndarray:
        """Predict ``(n_spots, n_genes)`` for spots of unseen slides."""

    def get_params(self) -> dict[str, Any]:
        """Parameters to record in ``uns``."""
        return dict(self.params)


_REGISTRY: dict[str, type[Model]] = {}


def register_model(name: str) -> Callable[[type[Model]], type[Model]]:
    """Class decorator adding a model under ``name`` to ``st.tl.fit_predict(model=name)``.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> @st.tl.register_model("training_mean")
    ... class TrainingMean(st.tl.Model):
    ...     default_rep = "X_handcrafted"
    ...     def fit(self, train):
    ...         self.mean_ = train.targets.mean(axis=0)
    ...         return self
    ...     def predict(self, test):
    ...         return np.tile(self.mean_, (len(test.features), 1))
    >>> "training_mean" in st.tl.available_models()
    True
    >>> from stpredict.tl._models._base import _REGISTRY; _ = _REGISTRY.pop("training_mean")
    """

    def decorate(cls: type[Model]) -> type[Model]:
        if name in _REGISTRY:
            msg = f"A model named {name!r} is already registered ({_REGISTRY[name].__name__})."
            raise ValueError(msg)
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def get_model(name: str) -> type[Model]:
    """The model class registered under ``name``."""
    if name not in _REGISTRY:
        msg = f"Unknown model {name!r}; available: {available_models()}."
        raise ValueError(msg)
    return _REGISTRY[name]


def available_models() -> list[str]:
    """Names accepted by ``st.tl.fit_predict(model=...)``.

    Examples
    --------
    >>> import stpredict as st
    >>> "ridge" in st.tl.available_models()
    True
    """
    return sorted(_REGISTRY)
