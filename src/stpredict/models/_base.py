"""The model contract: what a model receives, what it must return, how it is stored, and the registry.

A model knows arrays only (see :class:`~stpredict.models.ModelInputs`); AnnData handling, save/load and
provenance live in :class:`~stpredict.models.Predictor`, as in scvi-tools' model/module split.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .._validate import check_choice
from ._inputs import ModelInputs


@dataclass
class Validation:
    """What a model learned about itself on held-out **training** groups (never on test slides).

    Attributes
    ----------
    groups
        What the held-out groups are: ``'patient'``, ``'slide'`` or ``'spatial block'``.
    held_out
        The held-out group names (all groups in turn for cross-validated models such as ridge).
    score
        Mean over genes of the validation Pearson (per slide, then averaged).
    gene_pearson
        Validation Pearson of every predicted gene (aligned with the predictor's genes): PCC(H) picks its
        "highly predictive" genes from it.
    selected
        Hyper-parameters chosen on this validation (e.g. ridge's ``alpha``, a network's ``best_epoch``).
    history
        Per-epoch training curve of neural models (``epoch``, ``train_loss``, ``val_loss``, ``val_pcc``).
    """

    groups: str
    held_out: list[str]
    score: float
    gene_pearson: np.ndarray
    selected: dict[str, Any] = field(default_factory=dict)
    history: pd.DataFrame | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for ``uns`` and for the JSON part of a saved model)."""
        out = {
            "groups": self.groups,
            "held_out": list(map(str, self.held_out)),
            "score": float(self.score),
            "gene_pearson": np.asarray(self.gene_pearson, dtype=np.float64),
            "selected": dict(self.selected),
        }
        if self.history is not None:
            out["history"] = self.history
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-safe values (NaN becomes ``None``)."""
        values = self.to_dict()
        values["gene_pearson"] = [None if not np.isfinite(v) else float(v) for v in values["gene_pearson"]]
        if self.history is not None:
            values["history"] = self.history.astype(object).where(self.history.notna(), None).to_dict(orient="list")
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Validation:
        """Inverse of :meth:`to_json`."""
        history = values.get("history")
        return cls(
            groups=values["groups"],
            held_out=list(values["held_out"]),
            score=float(values["score"]),
            gene_pearson=np.array([np.nan if v is None else v for v in values["gene_pearson"]], dtype=np.float64),
            selected=dict(values.get("selected", {})),
            history=None if history is None else pd.DataFrame(history).astype(float),
        )


class Model(ABC):
    """A spatial expression predictor on arrays. Subclass it and register it with :func:`register_model`.

    Class attributes declare what the model needs, so that inputs are built and checked once:

    - ``defaults``: every accepted ``model_params`` key with its default (unknown keys are an error);
    - ``ablations``: the paper's ablations, ``{name: model_params}`` (benchmarks and tutorials loop over them);
    - ``default_rep``: ``obsm`` representation used when ``use_rep=None``;
    - ``uses_device``: whether it runs on torch and honours ``device``;
    - ``graphs``: spatial graphs it reads, ``{name: st.pp.spatial_graph kwargs}``, built per slide into
      ``inputs.graphs[name]`` and stored with the predictions;
    - ``needs_grid`` / ``needs_images``: array coordinates / a patch accessor in the inputs;
    - ``Net`` and ``training_defaults`` (neural models): the network's typed parameters (a
      :class:`~stpredict.models._params.Params` dataclass) and the training loop's settings with this model's
      defaults (a ``TrainSettings``); ``defaults`` is derived from them, and both are checked when the model is
      made (``self.net_params``, ``self.train_settings``).

    Subclasses implement :meth:`fit`, :meth:`predict`, :meth:`state_dict` and :meth:`load_state_dict`
    (arrays only: saved models never contain code).
    """

    name: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    ablations: ClassVar[Mapping[str, Mapping[str, Any]]] = MappingProxyType({})
    default_rep: ClassVar[str | None] = "X_handcrafted"
    uses_device: ClassVar[bool] = False
    graphs: ClassVar[Mapping[str, Mapping[str, Any]]] = MappingProxyType({})
    needs_grid: ClassVar[bool] = False
    needs_images: ClassVar[bool] = False
    Net: ClassVar[type | None] = None
    training_defaults: ClassVar[Any] = None
    #: training settings this model does not take (e.g. ``batch_size`` when a batch is a whole slide)
    fixed_training: ClassVar[tuple[str, ...]] = ()
    #: for a model that learns from pixels by default: the ``model_params`` with which it reads ``use_rep``
    representation_params: ClassVar[Mapping[str, Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Net" in cls.__dict__ or "training_defaults" in cls.__dict__:
            training = {} if cls.training_defaults is None else cls.training_defaults.as_dict()
            training = {k: v for k, v in training.items() if k not in cls.fixed_training}
            network = {} if cls.Net is None else cls.Net.defaults()
            cls.defaults = MappingProxyType({**training, **network})

    def __init__(
        self,
        *,
        random_state: int | None = 0,
        device: str = "cpu",
        trainer_params: Mapping[str, Any] | None = None,
        show_progress_bar: bool = False,
        **params: Any,
    ) -> None:
        self.params = self.check_params(params)
        # typed views of the parameters: a wrong choice fails here, not in the middle of fitting
        self.net_params = None if self.Net is None else self.Net.from_params(self.params)
        if self.net_params is not None:  # what is recorded (uns, saved models) is the checked value, e.g. in order
            self.params.update(
                {k: list(v) if isinstance(v, tuple) else v for k, v in self.net_params.as_dict().items()}
            )
        training = type(self).training_defaults
        self.train_settings = None if training is None else type(training).from_params(self.params)
        self.random_state = random_state
        self.device = device
        self.trainer_params = dict(trainer_params or {})
        self.show_progress_bar = show_progress_bar
        self.validation_: Validation | None = None
        self.n_features_: int | None = None
        self.n_genes_: int | None = None
        self.genes_: list[str] | None = None  # names of the predicted genes, set before fit and on load

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated with ``params``; a key the model does not know is an error naming the accepted ones."""
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            accepted = ", ".join(sorted(cls.defaults)) or "none"
            msg = f"Model {cls.name!r} does not accept parameter(s) {unknown}; accepted model_params: {accepted}."
            raise TypeError(msg)
        values = {**cls.defaults, **params}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def graph_specs(self) -> Mapping[str, Mapping[str, Any]]:
        """Graphs to build for this model's inputs, ``{name: spec}`` (default: the class's ``graphs``).

        A spec holds ``st.pp.spatial_graph`` kwargs, or ``{'kind': 'hierarchical', ...}`` with
        ``st.pp.hierarchical_graph`` kwargs for graphs that depend on the representation and ``model_params``.

        Examples
        --------
        >>> from stpredict.models._base import get_model
        >>> get_model("ridge_spatial")().graph_specs()["grid"]["kind"]
        'grid'
        >>> get_model("merge")(spots_per_cluster=50).graph_specs()["hierarchical"]["spots_per_cluster"]
        50
        """
        return self.graphs

    def reads_representation(self) -> bool:
        """Whether the model reads an ``obsm`` representation (``False``: it learns its own from pixels).

        Examples
        --------
        >>> from stpredict.models import get_model
        >>> get_model("sepal")().reads_representation(), get_model("sepal")(stage1="ridge").reads_representation()
        (False, True)
        """
        return True

    def reads_pixels(self) -> bool:
        """Whether the model reads patches from the images (``inputs.images``); default ``needs_images``.

        Examples
        --------
        >>> from stpredict.models import get_model
        >>> get_model("ridge")().reads_pixels(), get_model("sepal")().reads_pixels()
        (False, True)
        """
        return self.needs_images

    def prediction_annotations(self) -> Mapping[str, Mapping[str, Any]]:
        """What the last ``predict`` call adds beside the predictions, ``{'obsm': {suffix: value}}``.

        Written to ``obsm[f'{key_added}_{suffix}']`` (e.g. SpaHGC's retrieved reference spots); default none.

        Examples
        --------
        >>> from stpredict.models import get_model
        >>> get_model("ridge")().prediction_annotations()
        {}
        """
        return {}

    def _record_shapes(self, inputs: ModelInputs, targets: np.ndarray) -> None:
        self.n_features_ = int(inputs.features.shape[1])
        self.n_genes_ = int(targets.shape[1])

    @abstractmethod
    def fit(self, inputs: ModelInputs, targets: np.ndarray) -> Model:
        """Learn from training spots; ``targets`` is ``(n_spots, n_genes)``. Must set ``validation_``."""

    @abstractmethod
    def predict(self, inputs: ModelInputs) -> np.ndarray:
        """Predict ``(n_spots, n_genes)`` for spots of unseen slides (inputs carry no expression)."""

    @abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything learned, as named arrays."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore from :meth:`state_dict` (``n_features_`` and ``n_genes_`` are set before the call)."""


_REGISTRY: dict[str, type[Model] | str] = {
    # built-in models are imported on first use, so `import stpredict` stays light
    "ridge": "stpredict.models.ridge:RidgeModel",
    "ridge_spatial": "stpredict.models.ridge:SpatialRidgeModel",
    "mlp": "stpredict.models.mlp:MLPModel",
    "merge": "stpredict.models.merge:MergeModel",
    "sepal": "stpredict.models.sepal._model:SepalModel",
    "triplex": "stpredict.models.triplex._model:TriplexModel",
    "spahgc": "stpredict.models.spahgc._model:SpahgcModel",
    "m2tglgo": "stpredict.models.m2tglgo._model:M2tglgoModel",
    "stnet": "stpredict.models.stnet:StnetModel",
    "bleep": "stpredict.models.bleep:BleepModel",
    "ensemble": "stpredict.models.ensemble:EnsembleModel",
    "istar": "stpredict.models.istar:IstarModel",
    "spot2cell": "stpredict.models.spot2cell:Spot2CellModel",
}


def register_model(name: str) -> Callable[[type[Model]], type[Model]]:
    """Class decorator adding a model under ``name`` to ``st.tl.fit(model=name)``.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> @st.tl.register_model("training_mean")
    ... class TrainingMean(st.tl.Model):
    ...     def fit(self, inputs, targets):
    ...         self.mean_ = targets.mean(axis=0)
    ...         return self
    ...     def predict(self, inputs):
    ...         return np.tile(self.mean_, (inputs.n_spots, 1))
    ...     def state_dict(self):
    ...         return {"mean": self.mean_}
    ...     def load_state_dict(self, state):
    ...         self.mean_ = state["mean"]
    >>> "training_mean" in st.tl.available_models()
    True
    >>> from stpredict.models._base import _REGISTRY; _ = _REGISTRY.pop("training_mean")
    """

    def decorate(cls: type[Model]) -> type[Model]:
        if name in _REGISTRY:
            msg = f"A model named {name!r} is already registered."
            raise ValueError(msg)
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def get_model(name: str) -> type[Model]:
    """The model class registered under ``name`` (importing its module on first use)."""
    if name not in _REGISTRY:
        check_choice(name, available_models(), "model")  # raises, naming the closest model
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)
        entry.name = name
        _REGISTRY[name] = entry
    return entry


def available_models() -> list[str]:
    """Names accepted by ``st.tl.fit(model=...)``.

    Examples
    --------
    >>> import stpredict as st
    >>> {"ridge", "ridge_spatial", "mlp"} <= set(st.tl.available_models())
    True
    """
    return sorted(_REGISTRY)


def model_ablations(model: str) -> dict[str, dict[str, Any]]:
    """The ablations of a registered model's paper, as ``{name: model_params}``.

    Pass the parameters to ``st.tl.fit`` or ``st.tl.cross_validate`` (``model_params=``) to compare a model
    with its ablations on the same inputs; models without published ablations (the baselines) have none.

    Examples
    --------
    >>> import stpredict as st
    >>> st.tl.model_ablations("merge")
    {'1hop': {'clusterings': []}}
    >>> st.tl.model_ablations("ridge")
    {}
    """
    return {name: dict(params) for name, params in get_model(model).ablations.items()}
