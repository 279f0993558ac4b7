"""Plots of the analyses of predictions: gene-set enrichment and predicted regions beside reference labels."""

from __future__ import annotations

from os import PathLike

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from ._spatial import _finish, slide_view


def enrichment(
    table: pd.DataFrame,
    *,
    group: str | None = None,
    n_top: int = 15,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | PathLike | None = None,
) -> Axes | None:
    """Dot plot of :func:`stpredict.tl.enrichment`: gene ratio (x), −log10 adjusted p (colour), overlap (size).

    Parameters
    ----------
    table
        The enrichment table.
    group
        For a table of several groups (from a DE result), the group to draw (default: the first).
    n_top
        Sets with the smallest adjusted p-values drawn.
    ax, show, save
        As in scanpy: draw on ``ax``; show unless ``save`` is given; ``show=False`` returns the Axes.

    Examples
    --------
    >>> import stpredict as st
    >>> sets = {"A": ["g1", "g2", "g3", "g4", "g5"], "B": ["g6", "g7", "g8", "g9", "g10"]}
    >>> table = st.tl.enrichment(["g1", "g2", "g3", "g6"], gene_sets=sets, background=[f"g{i}" for i in range(1, 21)])
    >>> ax = st.pl.enrichment(table, show=False)
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['B', 'A']
    """
    if table.empty:
        msg = "The enrichment table is empty: no gene set had enough background genes (see min_size)."
        raise ValueError(msg)
    if "group" in table:
        group = table["group"].iloc[0] if group is None else group
        if group not in set(table["group"]):
            msg = f"Group {group!r} not in the table (groups: {sorted(set(table['group']))})."
            raise KeyError(msg)
        table = table[table["group"] == group]
    top = table.nsmallest(n_top, ["padj", "pvalue"]).iloc[::-1]  # best at the top
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * len(top) + 1.4))
    score = -np.log10(np.clip(top["padj"].to_numpy(float), 1e-300, 1))
    sizes = 30 + 220 * top["overlap"].to_numpy(float) / max(float(top["overlap"].max()), 1.0)
    points = ax.scatter(
        top["gene_ratio"], np.arange(len(top)), s=sizes, c=score, cmap="viridis", edgecolors="black", linewidths=0.4
    )
    ax.set_yticks(
        np.arange(len(top)),
        [
            str(s).removeprefix("HALLMARK_").replace("_", " ") if str(s).startswith("HALLMARK_") else str(s)
            for s in top["set"]
        ],
    )
    ax.set_xlabel("gene ratio (overlap / genes of interest)")
    ax.figure.colorbar(points, ax=ax, label="−log10 adjusted p", shrink=0.8)
    for overlap in sorted({int(top["overlap"].min()), int(top["overlap"].max())}):
        ax.scatter(
            [],
            [],
            s=30 + 220 * overlap / max(float(top["overlap"].max()), 1.0),
            c="white",
            edgecolors="black",
            label=f"{overlap} gene" + ("" if overlap == 1 else "s"),
        )
    ax.legend(title="overlap", loc="lower right", fontsize=7, title_fontsize=7, frameon=False)
    ax.set_title(f"enrichment{'' if group in (None, 'genes') else f' of {group}'}: top {len(top)} sets")
    ax.margins(x=0.15, y=0.08)
    return _finish(ax, show, save)


def regions(
    adata: AnnData,
    *,
    key_pred: str = "pred_clusters",
    key_true: str | None = None,
    library_id: str | None = None,
    show_image: bool = True,
    axes: np.ndarray | None = None,
    show: bool | None = None,
    save: str | PathLike | None = None,
) -> np.ndarray | None:
    """Predicted regions on the slide, beside reference labels (ARI in the title) when ``key_true`` is given.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> st.tl.cluster_predictions(adata, layer="log1p", n_clusters=3)
    >>> axes = st.pl.regions(adata, library_id="C2", show=False)
    >>> axes[0].get_title()
    'C2: pred_clusters'
    """
    from .._validate import library_ids
    from ..tl._regions import region_agreement

    library_id = library_ids(adata)[0] if library_id is None else library_id
    view = slide_view(adata, library_id, show_image=show_image)
    keys = [key_pred] + ([key_true] if key_true is not None else [])
    for key in keys:
        if key not in adata.obs:
            msg = f"adata.obs[{key!r}] not found: run st.tl.cluster_predictions (or read the labels) first."
            raise KeyError(msg)
    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 5), squeeze=False)
    axes = np.asarray(axes).ravel()
    for ax, key in zip(axes, keys, strict=True):
        labels = adata.obs[key].astype("category").iloc[np.flatnonzero(view.mask)]
        palette = plt.get_cmap("tab20" if len(labels.cat.categories) > 10 else "tab10")
        if view.image is not None:
            ax.imshow(view.image, alpha=0.5)
        for code, name in enumerate(labels.cat.categories):
            chosen = (labels.cat.codes == code).to_numpy()
            ax.scatter(
                *view.xy[chosen].T,
                s=view.spot_size,
                marker=view.marker,
                color=palette(code % palette.N),
                label=str(name),
                edgecolors="none",
            )
        unlabelled = (labels.cat.codes < 0).to_numpy()
        if unlabelled.any():
            ax.scatter(
                *view.xy[unlabelled].T,
                s=view.spot_size,
                marker=view.marker,
                color="0.85",
                label="no label",
                edgecolors="none",
            )
        ax.set_title(f"{library_id}: {key}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        view.frame(ax)
    for ax in axes:
        view.fit_spots(ax)
    if key_true is not None:
        ari = region_agreement(adata[view.mask], key_pred=key_pred, key_true=key_true).loc["all", "ari"]
        axes[0].set_title(f"{library_id}: {key_pred} (ARI {ari:.2f} with {key_true})")
    return _finish(axes[0], show, save, result=axes)


def smoothing_histogram(
    adata: AnnData,
    *,
    layers: tuple[str, ...] | list[str] = ("log1p", "log1p_8n", "log1p_spcs"),
    genes: list[str] | None = None,
    bins: int = 50,
    log_count: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | PathLike | None = None,
) -> Axes | None:
    """Distribution of expression values before and after smoothing (MERGE's Fig. 3), one step histogram per layer.

    Smoothing (``st.pp.smooth``: 8 neighbours, SPCS, the adaptive median) fills dropouts: the share of
    zeros, given in the legend, falls and the values move towards the middle.

    Parameters
    ----------
    adata
        Spots with the layers to compare.
    layers
        Layers to draw (missing ones are an error naming the available layers).
    genes
        Genes whose values are pooled (default: all genes).
    bins
        Histogram bins over the pooled range.
    log_count
        Logarithmic count axis (zeros dominate raw ST data).
    ax, show, save
        As in scanpy.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> st.pp.smooth(adata, method="8n", layer="log1p", key_added="log1p_8n", show_progress_bar=False)
    >>> ax = st.pl.smoothing_histogram(adata, layers=["log1p", "log1p_8n"], genes=["ERBB2", "GNAS"], show=False)
    >>> [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()]
    ['log1p', 'log1p_8n']
    """
    from .._validate import as_gene_list, check_genes_present, get_matrix

    genes = as_gene_list(genes)
    columns = None
    if genes is not None:
        check_genes_present(adata, genes)
        columns = adata.var_names.get_indexer(genes)
    values = {layer: get_matrix(adata, layer, columns=columns).ravel() for layer in layers}
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    edges = np.linspace(finite.min(), finite.max(), bins + 1) if finite.size else np.linspace(0, 1, bins + 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.6))
    for layer, vals in values.items():
        vals = vals[np.isfinite(vals)]
        zeros = float(np.mean(vals == 0)) if vals.size else float("nan")
        ax.hist(vals, bins=edges, histtype="step", linewidth=1.4, label=f"{layer} ({zeros:.0%} zeros)")
    if log_count:
        ax.set_yscale("log")
    ax.set_xlabel("expression value")
    ax.set_ylabel("number of values (spot × gene)")
    ax.set_title(f"{'all' if genes is None else len(genes)} genes × {adata.n_obs} spots", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ax.figure.tight_layout()
    return _finish(ax, show, save)
