"""MERGE's hierarchical graph drawn over the H&E: clusters, centroid spots and shortcut edges."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection

from .._validate import check_adata, library_ids
from ._spatial import _finish, slide_view

EDGE_STYLE = {
    "spatial": {"colors": "0.35", "linewidths": 0.4, "alpha": 0.5},
    "internal_spatial": {"colors": "darkgreen", "linewidths": 0.5, "alpha": 0.5},
    "internal_feature": {"colors": "darkred", "linewidths": 0.5, "alpha": 0.5},
    "shortcut": {"colors": "black", "linewidths": 1.2, "alpha": 0.9},
}


def hierarchical_graph(
    adata: AnnData,
    *,
    library_id: str | None = None,
    key: str = "merge",
    color: str = "feature",
    edges: Sequence[str] = ("shortcut",),
    show_image: bool = True,
    spot_size: float | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | PathLike | None = None,
) -> Axes | None:
    """MERGE's graph of one slide (from :func:`stpredict.pp.hierarchical_graph`) over its H&E image.

    Spots are coloured by their spatial or feature cluster, centroid spots are drawn as stars, and the
    chosen kinds of edges as lines (by default the shortcut clique joining the centroids).

    Parameters
    ----------
    adata
        Slides with the graph under ``key``.
    library_id
        Slide to draw (default: the first).
    key
        ``key_added`` of :func:`stpredict.pp.hierarchical_graph`, or e.g. ``'pred_merge_hierarchical'`` for
        the graph stored with MERGE's predictions.
    color
        ``'feature'`` or ``'spatial'`` clusters.
    edges
        Edge kinds to draw among ``'spatial'``, ``'internal_spatial'``, ``'internal_feature'``, ``'shortcut'``.
    show_image
        Draw the ``hires`` image underneath.
    spot_size
        Marker size in points² (default: from the spot diameter).
    ax
        Axes to draw into (default: a new figure).
    show
        Show the figure (scanpy's default: unless ``save`` is given); when ``False`` the Axes are returned.
    save
        File to write the figure to.

    Returns
    -------
    The Axes when ``show=False``, else ``None``.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.image_features(adata, show_progress_bar=False)
    >>> st.pp.hierarchical_graph(adata, spots_per_cluster=25)
    >>> ax = st.pl.hierarchical_graph(adata, library_id="C3", show=False)
    >>> ax.get_title()
    'C3: 3 feature clusters, 6 centroids'
    """
    from ..pp._hierarchical import EDGE_TYPES

    check_adata(adata)
    type_key = f"{key}_edge_type"
    if type_key not in adata.obsp:
        msg = f"adata.obsp[{type_key!r}] not found: build the graph first with `st.pp.hierarchical_graph(adata, key_added={key!r})`."
        raise KeyError(msg)
    unknown = sorted(set(edges) - set(EDGE_TYPES))
    if unknown or color not in ("feature", "spatial"):
        msg = (
            f"edges must be among {list(EDGE_TYPES)} (got {unknown}) and color 'feature' or 'spatial' (got {color!r})."
        )
        raise ValueError(msg)
    library_id = library_id or library_ids(adata)[0]
    view = slide_view(adata, library_id, show_image=show_image, spot_size=spot_size)
    spots = np.flatnonzero(view.mask)
    column = f"{key}_{color}_cluster"
    labels = adata.obs[column].iloc[spots] if column in adata.obs else None
    centroid = adata.obs[f"{key}_centroid"].to_numpy(dtype=bool)[spots]

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5.5))
    if view.image is not None:
        ax.imshow(view.image, alpha=0.4)
    codes = adata.obsp[type_key][spots][:, spots].tocoo()
    upper = codes.row < codes.col  # one segment per undirected edge
    for kind in edges:
        keep = upper & ((codes.data.astype(np.int64) & EDGE_TYPES[kind]) > 0)
        segments = np.stack([view.xy[codes.row[keep]], view.xy[codes.col[keep]]], axis=1)
        ax.add_collection(LineCollection(segments, zorder=2, label=kind.replace("_", " "), **EDGE_STYLE[kind]))
    if labels is not None and labels.notna().any():
        categories = labels.cat.categories
        palette = plt.get_cmap("tab20" if len(categories) > 10 else "tab10")
        colours = [palette(i % palette.N) for i in labels.cat.codes]
        n_clusters = int(labels.nunique())
    else:
        colours, n_clusters = ["0.5"] * len(spots), 0
    ax.scatter(*view.xy.T, c=colours, s=view.spot_size, marker=view.marker, edgecolors="none", zorder=3)
    ax.scatter(
        *view.xy[centroid].T,
        marker="*",
        s=view.spot_size * 3,
        c="gold",
        edgecolors="black",
        linewidths=0.8,
        zorder=4,
        label="centroid spot",
    )
    ax.set_title(f"{library_id}: {n_clusters} {color} clusters, {int(centroid.sum())} centroids")
    view.frame(ax)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    view.fit_spots(ax)
    return _finish(ax, show, save)
