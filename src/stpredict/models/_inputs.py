"""What a model may see of a slide: built and checked once, never the caller's AnnData.

Inputs carry the image representation, spot positions, slide/patient groups, the array grid, the spatial
graphs a model declares and a patch accessor: no expression. Training targets are passed to
``Model.fit`` separately, so a model handed a test slide has nothing measured to reach.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._constants import ARRAY_COL, ARRAY_ROW, LIBRARY_KEY, PATIENT_KEY, SPATIAL_KEY
from .._recipe import FEATURES_KEY, FeatureRecipe, stored_key
from .._validate import require_grid, require_spatial, spot_libraries
from ..pp._graph import build_graph


@dataclass(frozen=True)
class SlideImages:
    """Patches of the spots of some slides, read one slide at a time from the images in ``uns['spatial']``.

    Holds spot positions and image references only (an expression-free AnnData). ``target_mpp`` resamples
    every patch to that pixel size (the training slides' when a predictor meets a slide scanned otherwise).
    """

    _spots: AnnData
    target_mpp: float | None = None

    def iter_patches(
        self, *, size: float = 224, unit: str = "px", batch_size: int = 256
    ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(library_id, spot positions, uint8 patches (n, s, s, 3))`` batches, slide by slide."""
        from ..pp._patches import iter_slide_patches

        yield from iter_slide_patches(
            self._spots, size=size, unit=unit, batch_size=batch_size, target_mpp=self.target_mpp
        )

    @property
    def spots(self) -> AnnData:
        """The expression-free AnnData of these spots: positions, image references, stored image features."""
        return self._spots

    def stored(self, recipe: FeatureRecipe) -> str | None:
        """The ``obsm`` key of image features that ``st.pp`` stored with ``recipe``, or ``None``.

        The recipe is matched at these spots' resampling (``target_mpp``).
        """
        return stored_key(self._spots, recipe.replace(target_mpp=self.target_mpp))

    def features(
        self, method: str, *, size: float = 224, unit: str = "px", segmentation: str | None = None, **kwargs: Any
    ) -> np.ndarray:
        """An image representation (``st.pp.image_features`` method) of these spots.

        Read from ``obsm`` when ``st.pp.image_features`` stored it with the same recipe (method, size, unit,
        no checkpoint), else computed from the pixels.
        """
        from ..pp._features import compute_image_features

        recipe = FeatureRecipe(method, size=size, unit=unit, segmentation=segmentation)
        key = None if kwargs else self.stored(recipe)
        if key is not None:
            return np.asarray(self._spots.obsm[key], dtype=np.float32)
        return compute_image_features(
            self._spots,
            method=method,
            size=size,
            unit=unit,
            target_mpp=self.target_mpp,
            segmentation=segmentation,
            **kwargs,
        )

    def subset(self, mask: np.ndarray) -> SlideImages:
        return SlideImages(self._spots[mask].copy(), self.target_mpp)


@dataclass(frozen=True)
class ModelInputs:
    """Spots handed to a model.

    Attributes
    ----------
    features
        ``(n_spots, n_features)`` image representation (``float32``).
    spatial
        ``(n_spots, 2)`` spot centres (x, y) in full-resolution pixels.
    library, patient
        Slide and patient of every spot (patient ``None`` when unknown).
    array_row, array_col
        Integer array coordinates, when the slides have them.
    graphs
        Spatial graphs the model declared (``Model.graphs``), CSR ``(n_spots, n_spots)``, no edge between slides.
    images
        Patch accessor for models that read pixels (``Model.needs_images``), else ``None``.
    spot_names
        ``obs_names`` of the spots (e.g. to name the reference spots a model retrieves), when known.
    """

    features: np.ndarray
    spatial: np.ndarray
    library: np.ndarray
    patient: np.ndarray
    array_row: np.ndarray | None = None
    array_col: np.ndarray | None = None
    graphs: Mapping[str, sp.csr_matrix] = field(default_factory=dict)
    images: SlideImages | None = None
    spot_names: np.ndarray | None = None

    @property
    def n_spots(self) -> int:
        return len(self.features)

    @property
    def slides(self) -> list[str]:
        return list(pd.unique(self.library))

    def subset(self, mask: np.ndarray) -> ModelInputs:
        """The inputs of the spots in ``mask`` (graphs restricted to them)."""
        mask = np.asarray(mask, dtype=bool)
        take = lambda a: None if a is None else a[mask]  # noqa: E731
        return ModelInputs(
            features=self.features[mask],
            spatial=self.spatial[mask],
            library=self.library[mask],
            patient=self.patient[mask],
            array_row=take(self.array_row),
            array_col=take(self.array_col),
            graphs={k: g[mask][:, mask].tocsr() for k, g in self.graphs.items()},
            images=None if self.images is None else self.images.subset(mask),
            spot_names=take(self.spot_names),
        )


def spot_patients(adata: AnnData) -> np.ndarray:
    """``obs['patient']`` as objects, ``None`` where unknown."""
    if PATIENT_KEY not in adata.obs:
        return np.full(adata.n_obs, None, dtype=object)
    column = adata.obs[PATIENT_KEY].astype(object)
    return column.where(column.notna(), None).to_numpy()


def expression_free_copy(adata: AnnData) -> AnnData:
    """Spot positions, slide/patient/grid columns and image references of ``adata``: no genes, no layers.

    Image features that ``st.pp`` stored with their recipe (``uns['stpredict_features']``: representations,
    neighbour views and their masks) come along, so that models need not recompute them; nothing else of
    ``obsm``. They are read from the pixels, never from expression.
    """
    columns = [c for c in (LIBRARY_KEY, PATIENT_KEY, ARRAY_ROW, ARRAY_COL) if c in adata.obs]
    obs = adata.obs[columns].copy()
    obs[LIBRARY_KEY] = spot_libraries(adata)
    uns = {SPATIAL_KEY: adata.uns[SPATIAL_KEY]} if SPATIAL_KEY in adata.uns else {}
    obsm = {SPATIAL_KEY: require_spatial(adata)}
    records = {key: dict(r) for key, r in adata.uns.get(FEATURES_KEY, {}).items() if key in adata.obsm}
    for key in records:
        for name in (key, f"{key}_mask"):  # a neighbour view's inside-the-image mask travels with it
            if name in adata.obsm:
                obsm[name] = np.asarray(adata.obsm[name])
    if records:
        uns[FEATURES_KEY] = records
    return AnnData(obs=obs, obsm=obsm, uns=uns)


def build_inputs(
    adata: AnnData,
    features: np.ndarray,
    *,
    graphs: Mapping[str, Mapping[str, Any]] | None = None,
    needs_grid: bool = False,
    needs_images: bool = False,
    target_mpp: float | None = None,
) -> tuple[ModelInputs, dict[str, Any]]:
    """Inputs of every spot of ``adata`` and the graphs built for them (to store with predictions).

    ``target_mpp``: patches that models read are resampled to this pixel size (see :class:`SlideImages`).
    """
    graphs = graphs or {}
    spots = expression_free_copy(adata)
    has_grid = ARRAY_ROW in spots.obs and ARRAY_COL in spots.obs
    grid_graph = any(g.get("kind", "grid") == "grid" for g in graphs.values())
    if (needs_grid or grid_graph) and not has_grid:
        needed_by = (
            "a graph on the spot array (a model's spot_graph='grid'; for spots without array coordinates "
            "choose spot_graph='knn' where the model offers it)"
            if grid_graph
            else "this model"
        )
        require_grid(spots, needed_by)  # raises the explanatory error
    rows, cols = require_grid(spots) if has_grid else (None, None)
    built = {name: build_graph(spots, features, spec) for name, spec in graphs.items()}
    inputs = ModelInputs(
        features=np.ascontiguousarray(features, dtype=np.float32),
        spatial=require_spatial(spots),
        library=spot_libraries(spots).astype(object),
        patient=spot_patients(spots),
        array_row=rows,
        array_col=cols,
        graphs={name: graph.connectivities for name, graph in built.items()},
        images=SlideImages(spots, target_mpp) if needs_images else None,
        spot_names=spots.obs_names.to_numpy(dtype=str),
    )
    return inputs, built
