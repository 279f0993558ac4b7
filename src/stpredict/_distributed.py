"""Slide-parallel work on a dask.distributed cluster: one slide per task.

A local ``LocalCluster`` on a laptop, or ``dask-jobqueue``/Kubernetes clusters, run the same code. Tasks
receive a small per-slide AnnData (spot positions and the slide's metadata, never its image): workers open
the image from the path recorded in ``uns['spatial'][library_id]['metadata']`` (or the SpatialData store),
so images never travel through the scheduler. The ``hires`` copy is sent only for slides that have no other
image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from ._constants import LIBRARY_KEY, SOURCE_IMAGE_KEY, SPATIAL_KEY, SPATIALDATA_STORE_KEY
from ._validate import slide_masks, spatial_entry


def resolve_client(client: Any):
    """``None``: run here; ``True``: the active ``dask.distributed`` client; else the client given."""
    if client is None or client is False:
        return None
    if client is True:
        try:
            from distributed import get_client
        except ImportError as err:  # pragma: no cover - distributed is installed with spatialdata
            msg = "client=True needs dask.distributed: pip install distributed"
            raise ImportError(msg) from err
        try:
            return get_client()
        except ValueError as err:
            msg = (
                "client=True but no dask.distributed client is running. Start one, e.g. "
                "`from distributed import Client, LocalCluster; client = Client(LocalCluster(n_workers=2))`, "
                "and pass client=client."
            )
            raise ValueError(msg) from err
    if not hasattr(client, "map") or not hasattr(client, "gather"):
        msg = f"client must be a dask.distributed Client (or True for the active one), got {type(client).__name__}."
        raise TypeError(msg)
    return client


def _slide_entry_for_workers(entry: dict) -> dict:
    """The slide's ``uns['spatial']`` entry without its in-memory images when a file or store holds the image."""
    metadata = entry.get("metadata", {})
    on_disk = any(
        metadata.get(key) and Path(metadata[key]).exists() for key in (SOURCE_IMAGE_KEY, SPATIALDATA_STORE_KEY)
    )
    if not on_disk:
        return entry
    return {k: v for k, v in entry.items() if k != "images"}


def slide_parts(
    adata: AnnData, *, library_key: str = LIBRARY_KEY, layers: Sequence[str] = (), obs: Sequence[str] = ()
) -> list[tuple[np.ndarray, AnnData]]:
    """Per slide: the spots' positions in ``adata`` and a minimal AnnData of that slide for a worker.

    It holds ``obs[library_key]`` and the ``obs`` columns asked for, ``obsm['spatial']``, the ``layers`` asked
    for and the slide's ``uns['spatial']`` entry (see :func:`_slide_entry_for_workers`).
    """
    parts = []
    for library_id, mask in slide_masks(adata, library_key).items():
        positions = np.flatnonzero(mask)
        view = adata[positions]
        columns = [c for c in (library_key, *obs) if c in adata.obs]
        part = AnnData(
            obs=view.obs[columns].copy(),
            var=adata.var[[]].copy() if layers else None,
            obsm={SPATIAL_KEY: np.asarray(view.obsm[SPATIAL_KEY])} if SPATIAL_KEY in adata.obsm else None,
            layers={name: np.asarray(view.layers[name]) for name in layers} or None,
        )
        if library_key not in part.obs:
            part.obs[library_key] = library_id
        entry = spatial_entry(adata, library_id)
        if entry is not None:
            part.uns[SPATIAL_KEY] = {library_id: _slide_entry_for_workers(entry)}
        parts.append((positions, part))
    return parts


def map_slides(client, function: Callable, parts: Sequence[tuple[np.ndarray, AnnData]], **kwargs) -> list:
    """``function(part, **kwargs)`` for every slide on the cluster, results in the order of ``parts``."""
    futures = client.map(lambda part: function(part, **kwargs), [part for _, part in parts], pure=False)
    return client.gather(futures)


def rows_in_order(n_obs: int, parts: Sequence[tuple[np.ndarray, AnnData]], arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Per-slide arrays (rows = the slide's spots) assembled into one array in ``adata``'s row order."""
    out = np.zeros((n_obs, *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    for (positions, _), values in zip(parts, arrays, strict=True):
        out[positions] = values
    return out
