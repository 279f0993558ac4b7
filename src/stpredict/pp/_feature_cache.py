"""An on-disk cache of image features, per slide and recipe, written as it goes.

Encoding a whole-slide image with a foundation model takes minutes to hours; ``fit``, ``predict`` and
``cross_validate`` would otherwise recompute the same features every time, and an interrupted run over many
slides would start again from zero. The cache keeps one Zarr group per (recipe, slide):
``<cache_dir>/<recipe digest>/<slide digest>.zarr`` with ``features`` (the slide's spots x features, in the
slide's spot order) and ``done`` (which spots are computed), updated after every batch.

A hit needs the same **recipe** (method, patch size and unit, target resolution, stain reference, encoder
weights digest, pretrained flag, preprocessing overrides) and the same **slide** (slide name, spot
centres in order, and the image file's path, size and modification time, or the downscaled image's pixels):
anything else is a miss, never a wrong feature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .._logging import logger
from .._recipe import FeatureRecipe
from .._validate import require_spatial, spatial_entry, spot_libraries


def slide_digest(adata: AnnData, library_id: str, rows: np.ndarray) -> str:
    """Identity of one slide's spots and image: name, centres (in order), image file or pixels."""
    from ..io._image import source_image_path

    hasher = hashlib.sha256(str(library_id).encode())
    hasher.update(np.ascontiguousarray(require_spatial(adata)[rows], dtype=np.float64).tobytes())
    path = source_image_path(adata, library_id)
    if path is not None and Path(path).exists():
        stat = Path(path).stat()
        hasher.update(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    else:  # no file: the downscaled copy is what patches come from
        image = (spatial_entry(adata, library_id) or {}).get("images", {}).get("hires")
        if image is not None:
            hasher.update(np.ascontiguousarray(image).tobytes())
    return hasher.hexdigest()[:24]


class FeatureCache:
    """The cached features of one recipe under ``root``; :meth:`lookup` and :meth:`store` per slide."""

    def __init__(self, root: str | Path, recipe: FeatureRecipe) -> None:
        self.recipe = recipe
        self.folder = Path(root) / recipe.digest()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "recipe.json").write_text(json.dumps(recipe.record(), sort_keys=True, indent=1))
        self._groups: dict[str, Any] = {}

    def names_and_preprocessing(self) -> tuple[list[str], dict | None] | None:
        """Feature names and resolved preprocessing recorded with the cache (``None`` before the first store)."""
        path = self.folder / "features.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record["names"], record["preprocessing"]

    def record_names_and_preprocessing(self, names: list[str], preprocessing: Mapping | None) -> None:
        path = self.folder / "features.json"
        if not path.is_file():
            path.write_text(json.dumps({"names": list(names), "preprocessing": preprocessing}))

    def _group(self, slide: str, create: bool):
        import zarr

        path = self.folder / f"{slide}.zarr"
        if slide not in self._groups:
            if not path.exists() and not create:
                return None
            self._groups[slide] = zarr.open_group(str(path), mode="a")
        return self._groups[slide]

    def lookup(
        self, adata: AnnData, library_key: str
    ) -> tuple[dict[str, tuple[np.ndarray, str]], np.ndarray, np.ndarray | None]:
        """Per slide its rows and digest, which spots are cached, and their features (``None``: none yet)."""
        libraries = spot_libraries(adata, library_key)
        slides, cached, features = {}, np.zeros(adata.n_obs, dtype=bool), None
        for library_id in dict.fromkeys(libraries):
            rows = np.flatnonzero(libraries == library_id)
            digest = slide_digest(adata, library_id, rows)
            slides[str(library_id)] = (rows, digest)
            group = self._group(digest, create=False)
            if group is None or "done" not in group:
                continue
            done = np.asarray(group["done"][:])
            if done.any():
                values = np.asarray(group["features"][:])
                if features is None:
                    features = np.full((adata.n_obs, values.shape[1]), np.nan, dtype=np.float32)
                features[rows[done]] = values[done]
                cached[rows[done]] = True
        if cached.any():
            logger.info("feature cache: %d of %d spots found in %s", cached.sum(), adata.n_obs, self.folder)
        return slides, cached, features

    def store(self, digest: str, n_slide_spots: int, within_slide: np.ndarray, values: np.ndarray) -> None:
        """Write one batch of a slide's features (rows ``within_slide`` of the slide) and mark them done."""
        group = self._group(digest, create=True)
        if "features" not in group:
            group.create_array("features", shape=(n_slide_spots, values.shape[1]), dtype="float32",
                               chunks=(min(n_slide_spots, 4096), values.shape[1]), fill_value=np.nan)  # fmt: skip
            group.create_array("done", shape=(n_slide_spots,), dtype="bool", chunks=(n_slide_spots,), fill_value=False)
        order = np.argsort(within_slide)
        rows, batch = within_slide[order], values[order]
        features = group["features"]
        done = np.asarray(group["done"][:])
        for start, stop in _runs(rows):  # contiguous runs: batches are slices of a slide's spots
            features[rows[start] : rows[stop - 1] + 1] = batch[start:stop]
        done[rows] = True
        group["done"][:] = done  # after the features: an interruption never marks unwritten rows done


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges of ``rows`` (sorted) that are consecutive integers."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    edges = [0, *breaks.tolist(), len(rows)]
    return list(zip(edges[:-1], edges[1:], strict=True))
