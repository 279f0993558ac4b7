"""Measured and predicted gene-gene correlation heatmaps, side by side (M2TGLGO's analysis)."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData

from ..tl._gene_correlation import correlation_block
from ._spatial import _finish


def clustered_order(corr: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage clustering on ``1 - corr`` (NaN treated as no correlation)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(corr) < 3:
        return np.arange(len(corr))
    distance = 1.0 - np.nan_to_num(corr, nan=0.0)
    distance = (distance + distance.T) / 2
    np.fill_diagonal(distance, 0.0)
    return leaves_list(linkage(squareform(np.clip(distance, 0, 2), checks=False), method="average"))


def gene_correlation(
    adata: AnnData,
    *,
    key: str = "gene_correlation",
    genes: Sequence[str] | None = None,
    cmap: str = "RdBu_r",
    show_labels: bool | None = None,
    ax: Sequence[plt.Axes] | None = None,
    show: bool | None = None,
    save: str | PathLike | None = None,
    axes: Sequence[plt.Axes] | None = None,
) -> np.ndarray | None:
    """Heatmaps of the measured and the predicted gene-gene correlations, in one gene order and colour scale.

    Genes are ordered by a hierarchical clustering of the **measured** correlations, so blocks of
    co-expressed genes line up; both panels share the colour scale -1..1. The title gives the structure
    score of :func:`stpredict.tl.gene_correlation`: the Pearson correlation between the off-diagonal entries
    of the two matrices (1: the predictions keep which genes go together).

    Parameters
    ----------
    adata
        Annotated data after :func:`stpredict.tl.gene_correlation`.
    key
        Its ``key_added``.
    genes
        A subset of its genes (default: all of them).
    cmap
        Diverging colour map.
    show_labels
        Gene names on the axes (default: when at most 60 genes).
    ax
        Two Axes to draw on (default: a new figure). ``axes=`` is accepted as a synonym.
    show, save
        As in scanpy and the other plots here: write the figure to ``save``; show it unless ``save`` is given
        (``show=False`` returns the Axes).

    Returns
    -------
    The two Axes (measured, predicted), when ``show=False``.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> predictor = st.tl.fit(adata[adata.obs.library_id != "C4"].copy(), genes=["ERBB2", "GRB7", "KRT8", "ACTB"])
    >>> test = adata[adata.obs.library_id == "C4"].copy()
    >>> predictor.predict(test, key_added="pred")
    >>> st.tl.gene_correlation(test, layer_true="log1p", layer_pred="pred")
    >>> axes = st.pl.gene_correlation(test, show=False)
    >>> [ax.get_title() for ax in axes]
    ['measured', 'predicted']
    """
    if key not in adata.uns:
        msg = f"adata.uns[{key!r}] not found: run st.tl.gene_correlation(adata, ..., key_added={key!r}) first."
        raise KeyError(msg)
    record = adata.uns[key]
    genes = list(record["genes"]) if genes is None else list(genes)
    unknown = sorted(set(genes) - set(record["genes"]))
    if unknown:
        msg = f"Genes {unknown[:5]} were not part of st.tl.gene_correlation's genes (uns[{key!r}]['genes'])."
        raise KeyError(msg)
    measured = correlation_block(adata, key, "true", genes)
    predicted = correlation_block(adata, key, "pred", genes)
    order = clustered_order(measured)
    labels = np.asarray(genes)[order]
    show_labels = len(genes) <= 60 if show_labels is None else show_labels
    axes = ax if ax is not None else axes
    if axes is None:
        size = min(4 + 0.12 * len(genes), 9)
        fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    axes = np.asarray(axes)
    for ax, corr, title in zip(axes, (measured, predicted), ("measured", "predicted"), strict=True):
        image = ax.imshow(corr[np.ix_(order, order)], cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ticks = np.arange(len(genes)) if show_labels else []
        ax.set_xticks(ticks, labels[ticks] if show_labels else [], rotation=90, fontsize=6)
        ax.set_yticks(ticks, labels[ticks] if show_labels else [], fontsize=6)
    fig = axes[0].figure
    fig.colorbar(image, ax=list(axes), shrink=0.7, label="Pearson r")
    where = f" — slide {record['library_id']}" if record.get("library_id") else ""
    fig.suptitle(
        f"gene-gene correlation of {len(genes)} genes{where}\nstructure score {record['score']:.3f} "
        "(Pearson between the measured and predicted correlations)",
        fontsize=10,
    )
    return _finish(axes[0], show, save, result=axes)
