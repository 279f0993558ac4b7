"""How image features were computed: one typed record, written by ``st.pp`` and matched by models and the cache.

``st.pp.image_features`` and ``st.pp.neighbour_features`` store a :class:`FeatureRecipe` next to the features
(``uns['stpredict_features'][key]``); a fitted model keeps the recipe of the representation it was trained on
and refuses a slide whose stored features differ in any field that changes the numbers
(:meth:`FeatureRecipe.differences`); models that read stored features find them by recipe
(:func:`stored_key`); the feature cache files features under the recipe's :meth:`~FeatureRecipe.digest`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

#: where ``st.pp`` records how each stored feature set was computed
FEATURES_KEY = "stpredict_features"


def jsonable(value: Any) -> Any:
    """Plain JSON values of nested parameters (numpy scalars and arrays, tuples); others become strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray | pd.Index):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(frozen=True)
class FeatureRecipe:
    """What must match for features to be interchangeable.

    Parameters
    ----------
    method
        The ``st.pp.image_features`` method (``'handcrafted'``, ``'resnet18'``, ``'uni'``, ...).
    size, unit
        Patch side (the tile side for neighbour views) and its unit.
    target_mpp
        The pixel size patches were resampled to (``None``: the slide's own).
    stain_reference
        The stain normalisation reference, or ``None``.
    checkpoint_sha256
        Digest of the encoder weights file (``None``: the method's own or random weights).
    pretrained
        Whether the method's published weights were loaded.
    preprocessing
        An encoder's input size, mean/std, interpolation, resize/crop and pooling.
    grid
        Tiles per side of a neighbour view (``None`` for one patch per spot).
    segmentation
        The recorded nuclei segmentation nuclei features came from (``None``: segmented from the pixels).
    checkpoint
        Where the weights file was; recorded to recompute features, **not compared** (the digest is).

    Examples
    --------
    >>> from stpredict._recipe import FeatureRecipe
    >>> trained = FeatureRecipe("resnet18", size=224, unit="px", pretrained=True)
    >>> trained.differences(FeatureRecipe("resnet18", size=112, unit="px", pretrained=True))
    {'size': (224, 112)}
    >>> trained.matches(FeatureRecipe.from_record(trained.record()))
    True
    """

    method: str
    size: float = 224
    unit: str = "px"
    target_mpp: float | None = None
    stain_reference: Mapping[str, Any] | None = None
    checkpoint_sha256: str | None = None
    pretrained: bool = False
    preprocessing: Mapping[str, Any] | None = None
    grid: int | None = None
    segmentation: str | None = None
    checkpoint: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # values as JSON gives them back (an h5ad round trip turns tuples into arrays): comparisons then agree
        for name in ("stain_reference", "preprocessing"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else jsonable(dict(value)))
        object.__setattr__(self, "pretrained", bool(self.pretrained))
        if float(self.size).is_integer():  # 64 and 64.0 are one patch size (and one cache folder)
            object.__setattr__(self, "size", int(self.size))
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", str(self.checkpoint))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FeatureRecipe:
        """The recipe of a stored record (extra keys such as ``feature_names`` ignored)."""
        record = dict(record)
        if "tile_size" in record and "size" not in record:  # neighbour-view records written before 0.x
            record["size"] = record["tile_size"]
        known = {f.name for f in fields(cls)}
        values = {k: jsonable(v) for k, v in record.items() if k in known and v is not None}
        return cls(**values)

    @classmethod
    def of(cls, adata: AnnData, key: str) -> FeatureRecipe | None:
        """The recipe stored with ``adata.obsm[key]``, or ``None`` when ``st.pp`` did not record one."""
        record = adata.uns.get(FEATURES_KEY, {}).get(key)
        return None if record is None else cls.from_record(record)

    def record(self) -> dict[str, Any]:
        """Plain JSON values of every field (what ``uns`` and a saved model hold)."""
        return jsonable(asdict(self))

    def store(self, adata: AnnData, key: str, **extra: Any) -> None:
        """Record this recipe for ``adata.obsm[key]`` (with ``extra`` values such as ``feature_names``).

        The record table is replaced, not changed in place: an AnnData made with a shallow copy of another's
        ``uns`` (a fold of ``st.tl.cross_validate``) never writes into the other's.
        """
        adata.uns[FEATURES_KEY] = {**adata.uns.get(FEATURES_KEY, {}), key: {**self.record(), **extra}}

    def differences(self, other: FeatureRecipe) -> dict[str, tuple[Any, Any]]:
        """``{field: (mine, theirs)}`` for every compared field that differs."""
        compared = [f.name for f in fields(self) if f.compare]
        return {k: (getattr(self, k), getattr(other, k)) for k in compared if getattr(self, k) != getattr(other, k)}

    def matches(self, other: FeatureRecipe) -> bool:
        """Whether features of ``other`` can stand for features of this recipe."""
        return not self.differences(other)

    def digest(self) -> str:
        """A short stable name of the compared fields (the feature cache's folder)."""
        compared = {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.compare}
        return hashlib.sha256(json.dumps(compared, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def replace(self, **changes: Any) -> FeatureRecipe:
        return replace(self, **changes)


def stored_key(adata: AnnData, recipe: FeatureRecipe) -> str | None:
    """The ``obsm`` key of features stored with ``recipe``, or ``None`` when none were."""
    for key in adata.uns.get(FEATURES_KEY, {}):
        stored = FeatureRecipe.of(adata, key)
        if key in adata.obsm and stored is not None and recipe.matches(stored):
            return key
    return None
