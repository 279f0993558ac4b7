"""Spatial maps of measured vs predicted expression, and score plots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.figure import Figure

from .._constants import LIBRARY_KEY, SPATIAL_KEY, SPOT_SHAPE_KEY, derived_key
from .._files import atomic_path
from .._metrics import column_pearson
from .._predictions import get_predictions
from .._validate import (
    as_gene_list,
    check_adata,
    get_matrix,
    library_ids,
    spatial_entry,
    spot_libraries,
)


def _save(fig: Figure, save: str | PathLike | None) -> None:
    """Write the figure to ``save`` (format from its suffix, PNG without one), never leaving a partial file."""
    if save is not None:
        fmt = Path(save).suffix.lstrip(".").lower() or "png"
        with atomic_path(save) as tmp, open(tmp, "wb") as handle:
            fig.savefig(handle, format=fmt, dpi=150, bbox_inches="tight")


def _finish(ax, show: bool | None, save: str | PathLike | None, *, result=None):
    """Save ``ax``'s figure, then show it (scanpy's default: unless ``save`` is given) or return ``result``.

    ``result`` defaults to the Axes; plots made of several Axes return their Figure or array of Axes.
    """
    _save(ax.figure, save)
    if show is None:
        show = save is None
    if show:
        plt.show()
        return None
    return ax if result is None else result


@dataclass
class SlideView:
    """One slide's spots in ``hires`` image coordinates, its image, the spot diameter and a marker size."""

    mask: np.ndarray
    xy: np.ndarray
    image: np.ndarray | None
    spot_size: float
    diameter: float = 0.0  # spot diameter (a square bin's side) in the same (hires pixel) units as ``xy``
    fixed_size: bool = False  # the caller chose ``spot_size``: keep it
    marker: str = "o"  # "o" for round spots, "s" for square bins (Visium HD); both span sqrt(size) points

    def frame(self, ax) -> None:
        """Zoom onto the spots with room for whole spots at the edges, equal axes, image y axis down, no ticks."""
        pad = (
            0.6 * self.diameter if self.diameter > 0 else 0.02 * max(np.ptp(self.xy[:, 0]), np.ptp(self.xy[:, 1]), 1.0)
        )
        ax.set_xlim(self.xy[:, 0].min() - pad, self.xy[:, 0].max() + pad)
        ax.set_ylim(self.xy[:, 1].max() + pad, self.xy[:, 1].min() - pad)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])

    def fit_spots(self, ax) -> None:
        """Resize the Axes' spot markers so that each is drawn ``diameter`` wide in data units.

        Call once the figure's layout is final (marker sizes are in points², so they follow the Axes' size).
        """
        if self.fixed_size or self.diameter <= 0:
            return
        figure = ax.figure
        figure.canvas.draw_without_rendering() if hasattr(figure.canvas, "draw_without_rendering") else None
        width_points = ax.get_window_extent().width * 72.0 / figure.dpi
        x0, x1 = ax.get_xlim()
        size = (self.diameter * width_points / abs(x1 - x0)) ** 2
        for collection in ax.collections:
            if (
                hasattr(collection, "set_sizes")
                and len(collection.get_offsets())
                and collection.get_label() != "centroid spot"
            ):
                collection.set_sizes([size])


def slide_view(
    adata: AnnData, library_id: str, *, show_image: bool = True, spot_size: float | None = None
) -> SlideView:
    """Spots of ``library_id`` scaled onto its ``hires`` image (error naming the slides when absent).

    Spots are drawn ``spot_diameter_fullres`` × ``tissue_hires_scalef`` wide (see :meth:`SlideView.fit_spots`);
    ``spot_size`` (points²) overrides it.
    """
    mask = spot_libraries(adata) == library_id
    if not mask.any():
        msg = f"Slide {library_id!r} not in adata.obs[{LIBRARY_KEY!r}] (slides: {library_ids(adata)})."
        raise KeyError(msg)
    slide = spatial_entry(adata, library_id) or {}
    scale = float(slide.get("scalefactors", {}).get("tissue_hires_scalef", 1.0))
    xy = np.asarray(adata.obsm[SPATIAL_KEY])[mask] * scale
    image = slide.get("images", {}).get("hires") if show_image else None
    diameter = float(slide.get("scalefactors", {}).get("spot_diameter_fullres", np.nan)) * scale
    diameter = diameter if np.isfinite(diameter) else 0.0
    fixed = spot_size is not None
    if spot_size is None:  # a first guess for the scatter call; fit_spots sets the exact size
        spot_size = 20.0
    marker = "s" if slide.get("metadata", {}).get(SPOT_SHAPE_KEY) == "square" else "o"
    return SlideView(mask, xy, image, float(spot_size), diameter, fixed, marker)


def prediction(
    adata: AnnData,
    genes: Sequence[str] | str,
    *,
    layer_pred: str,
    layer_true: str | None = "log1p",
    library_id: str | None = None,
    show_image: bool = True,
    cmap: str = "viridis",
    shared_scale: bool = True,
    spot_size: float | None = None,
    uncertainty: bool = False,
    ax=None,
    show: bool | None = None,
    save: str | PathLike | None = None,
) -> Figure | None:
    """Measured and predicted expression side by side on one slide, with the per-gene Pearson.

    Each gene gets a row; columns are the measurement (if ``layer_true`` is given) and the prediction,
    drawn over the slide's ``hires`` image, on one colour scale per gene (so colours mean the same value in
    both). Regression to the mean makes predictions span a narrower range than measurements: with
    ``shared_scale=False`` each panel gets its own scale, which shows the predicted pattern in full (Pearson
    ignores scale anyway).

    Parameters
    ----------
    adata
        Slides with predictions in ``layers[layer_pred]``.
    genes
        Genes to show.
    layer_pred, layer_true
        Layers with predicted and measured values (``layer_true=None`` shows predictions only).
        ``layer_pred`` may also be the ``obsm`` DataFrame written by :func:`stpredict.tl.fit_predict`, which is
        how predictions of image-only slides (no genes) are plotted.
    library_id
        Slide to show (default: the first).
    show_image
        Draw the H&E ``hires`` image underneath.
    cmap
        Colour map.
    shared_scale
        One colour scale per gene for both panels (default), or one per panel.
    spot_size
        Marker size in points² (default: from the spot diameter).
    uncertainty
        Add a panel of the prediction interval's width (``obsm[f'{layer_pred}_upper'] - obsm[f'{layer_pred}_lower']``,
        written by ``predict(..., interval=0.9)``): where the model is less sure.
    ax
        Axes to draw on: one per panel (genes × [measured,] predicted [, interval width]), e.g. from
        ``plt.subplots``; by default a new figure.
    show, save
        As in scanpy: write the figure to ``save``; show it unless ``save`` is given (``show=False`` returns it).

    Returns
    -------
    The figure, when ``show=False``.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> adata.layers["pred"] = adata.layers["log1p"] + 0.1
    >>> fig = st.pl.prediction(adata, ["ERBB2"], layer_pred="pred", library_id="C3", show=False)
    >>> len(fig.axes)  # measured, predicted and their shared colour bar
    3
    """
    check_adata(adata)
    genes = as_gene_list(genes)
    predicted, _ = get_predictions(adata, layer_pred, genes)
    if layer_true is not None and not set(genes) <= set(adata.var_names):
        layer_true = None  # an image-only slide: nothing measured to compare with
    library_id = library_id or library_ids(adata)[0]
    view = slide_view(adata, library_id, show_image=show_image, spot_size=spot_size)
    mask, xy, image, spot_size = view.mask, view.xy, view.image, view.spot_size
    columns = adata.var_names.get_indexer(genes)
    pred = predicted[mask]
    true = get_matrix(adata[mask], layer_true, columns=columns) if layer_true is not None else None
    width = _interval_width(adata, layer_pred, genes)[mask] if uncertainty else None

    scale_name = _scale_name(adata, layer_pred, layer_true)
    panels = (2 if true is not None else 1) + (width is not None)
    own_figure = ax is None
    fig, axes = _panel_axes(ax, len(genes), panels)  # genes x panels
    pearson = column_pearson(true, pred) if true is not None else [np.nan] * len(genes)
    for row, gene in enumerate(genes):
        values = [true[:, row], pred[:, row]] if true is not None else [pred[:, row]]
        titles = ["measured", f"predicted (r = {pearson[row]:.2f})"] if true is not None else ["predicted"]
        n_expression = len(values)
        if width is not None:
            level = adata.uns.get(layer_pred, {}).get("interval", {}).get("level")
            values.append(width[:, row])
            titles.append(f"{level:.0%} interval width" if level else "interval width")
        for col, (vals, title) in enumerate(zip(values, titles, strict=True)):
            ax = axes[row, col]
            is_width = col >= n_expression
            scale_values = np.concatenate(values[:n_expression]) if shared_scale and not is_width else vals
            finite = scale_values[np.isfinite(scale_values)]
            vmin, vmax = (np.percentile(finite, 1), np.percentile(finite, 99)) if len(finite) else (0, 1)
            if image is not None:
                ax.imshow(image, alpha=0.6)
            points = ax.scatter(
                xy[:, 0],
                xy[:, 1],
                c=vals,
                s=spot_size,
                marker=view.marker,
                cmap="magma" if is_width else cmap,
                vmin=vmin,
                vmax=vmax,
            )
            if not is_width:
                expression_points = points
            ax.set_title(f"{gene} {title}", fontsize=9)
            view.frame(ax)
            if is_width or not shared_scale:
                colourbar = fig.colorbar(points, ax=ax, shrink=0.8)
                kind = "measured" if (true is not None and col == 0) else "predicted"
                label = f"interval width ({scale_name})" if is_width else f"{kind} {scale_name}"
                colourbar.set_label(label, fontsize=8)
        if shared_scale:
            both = "measured and predicted" if true is not None else "predicted"
            fig.colorbar(
                expression_points,
                ax=axes[row, :n_expression].tolist(),
                shrink=0.8,
            ).set_label(f"{both} {scale_name}", fontsize=8)
    scales = "one colour scale per gene" if shared_scale or true is None else "each panel its own colour scale"
    if own_figure:
        fig.suptitle(f"slide {library_id} ({scales})", fontsize=10)
    for panel in axes.ravel():
        view.fit_spots(panel)
    return _finish(axes[0, 0], show, save, result=fig)


def _scale_name(adata: AnnData, layer_pred: str, layer_true: str | None) -> str:
    """What the colours show: the target layer the predictions were trained on (e.g. ``log1p``)."""
    recorded = (adata.uns.get(layer_pred) or {}).get("layer") if isinstance(adata.uns.get(layer_pred), dict) else None
    return str(recorded or layer_true or "expression")


def _interval_width(adata: AnnData, key: str, genes: list[str]) -> np.ndarray:
    """Upper minus lower interval bound of ``genes`` (an error saying how to get them when absent)."""
    missing = [derived_key(key, side) for side in ("lower", "upper") if derived_key(key, side) not in adata.obsm]
    if missing:
        msg = (
            f"uncertainty=True needs the interval bounds adata.obsm{missing}: predict with intervals, e.g. "
            f"predictor.predict(adata, key_added={key!r}, interval=0.9) (the model fitted with calibrate=True)."
        )
        raise KeyError(msg)
    lower, _ = get_predictions(adata, derived_key(key, "lower"), genes)
    upper, _ = get_predictions(adata, derived_key(key, "upper"), genes)
    return upper - lower


def _panel_axes(ax, n_genes: int, panels: int):
    """Axes as a genes × panels array, and their figure.

    A new figure (one row per gene for measured | predicted; predictions alone wrap over up to 4 columns),
    or the user's Axes checked to have one per panel.
    """
    if ax is None:
        n_cols = panels if panels > 1 else min(n_genes, 4)
        n_rows = -(-n_genes * panels // n_cols)
        fig, grid = plt.subplots(
            n_rows, n_cols, figsize=(3.6 * n_cols, 3.4 * n_rows), squeeze=False, constrained_layout=True
        )
        for unused in grid.ravel()[n_genes * panels :]:
            unused.set_axis_off()
        return fig, grid.ravel()[: n_genes * panels].reshape(n_genes, panels)
    axes = np.asarray(ax, dtype=object).ravel()
    if axes.size != n_genes * panels:
        msg = (
            f"ax= has {axes.size} Axes but the plot has {n_genes * panels} panels ({n_genes} gene(s) × {panels}); "
            f"pass e.g. plt.subplots({n_genes}, {panels})[1], or ax=None for a new figure."
        )
        raise ValueError(msg)
    return axes[0].figure, axes.reshape(n_genes, panels)


def scores(
    table: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("pcc_m", "pcc_h", "pcc_patch"),
    by: str = "library_id",
    ax=None,
    show: bool | None = None,
    save: str | PathLike | None = None,
):
    """Bar chart of per-slide scores (the table returned by :func:`stpredict.tl.cross_validate`).

    Parameters
    ----------
    table
        One row per slide with a ``by`` column and metric columns.
    metrics
        Columns to plot (missing ones are skipped).
    by
        Column naming the slide.
    ax, show, save
        As in scanpy: draw on ``ax``; show unless ``save`` is given; ``show=False`` returns the Axes.

    Returns
    -------
    The Axes, when ``show=False``.

    Examples
    --------
    >>> import pandas as pd, stpredict as st
    >>> table = pd.DataFrame({"library_id": ["C2", "C3"], "pcc_m": [0.2, 0.3], "pcc_h": [0.3, 0.4]})
    >>> ax = st.pl.scores(table, show=False)
    >>> ax.get_ylabel()
    'score'
    """
    import seaborn as sns

    wanted = list(metrics)
    metrics = [m for m in wanted if m in table]
    if not metrics:
        msg = f"None of the metrics {wanted} is a column of the table ({list(table.columns)})."
        raise KeyError(msg)
    long = table.melt(id_vars=[by], value_vars=metrics, var_name="metric", value_name="score")
    long["metric"] = long["metric"].map(lambda m: METRIC_NAMES.get(m, m))
    n_slides = table[by].nunique()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.6, 1.6 + 0.45 * n_slides * len(metrics)), 3.4))
    sns.barplot(long, x=by, y="score", hue="metric", ax=ax)
    means = table[metrics].mean()
    ax.set_title(
        "mean over slides: " + ", ".join(f"{METRIC_NAMES.get(m, m)} {v:.3f}" for m, v in means.items()), fontsize=9
    )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("held-out slide" if n_slides > 1 else f"held-out slide ({table[by].iloc[0]})")
    ax.set_ylabel("score")
    if n_slides > 8:
        ax.tick_params(axis="x", labelrotation=90)
    ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.figure.tight_layout()
    return _finish(ax, show, save)


#: how metrics are named in plots (the field's names)
METRIC_NAMES = {
    "pcc_m": "PCC(M)",
    "pcc_h": "PCC(H)",
    "pcc_patch": "PCC-Patch",
    "mse": "MSE",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R²",
    "r2_patch": "R²-Patch",
    "pearson": "Pearson r",
}


def model_comparison(
    results: dict[str, pd.DataFrame] | pd.DataFrame,
    *,
    metric: str = "pearson",
    kind: str = "box",
    ax=None,
    show: bool | None = None,
    save: str | PathLike | None = None,
):
    """Per-gene score distributions of several models, one box (or violin) per model.

    Parameters
    ----------
    results
        ``{model: per-gene table}`` (tables of :func:`stpredict.tl.evaluate`), or one long table with a
        ``model`` column.
    metric
        Per-gene column to compare (default: the per-gene Pearson).
    kind
        ``'box'`` or ``'violin'``.
    ax, show, save
        As in scanpy: draw on ``ax``; show unless ``save`` is given; ``show=False`` returns the Axes.

    Examples
    --------
    >>> import pandas as pd, stpredict as st
    >>> a = pd.DataFrame({"gene": list("xyz"), "pearson": [0.1, 0.2, 0.3]})
    >>> b = pd.DataFrame({"gene": list("xyz"), "pearson": [0.2, 0.3, 0.5]})
    >>> ax = st.pl.model_comparison({"ridge": a, "triplex": b}, show=False)
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['ridge', 'triplex']
    """
    import seaborn as sns

    if isinstance(results, dict):
        long = pd.concat([t.assign(model=name) for name, t in results.items()], ignore_index=True)
    else:
        long = results
    for column in ("model", metric):
        if column not in long:
            msg = f"The results need a {column!r} column (got {list(long.columns)})."
            raise KeyError(msg)
    if kind not in ("box", "violin"):
        msg = f"kind must be 'box' or 'violin', got {kind!r}."
        raise ValueError(msg)
    order = list(pd.unique(long["model"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.1 * len(order), 3.6))
    draw = sns.boxplot if kind == "box" else sns.violinplot
    draw(long, x="model", y=metric, order=order, ax=ax, color="0.85")
    means = long.groupby("model", sort=False)[metric].mean()  # the mean over genes: PCC(M) for the Pearson
    draw_means = ax.scatter(range(len(order)), means.reindex(order).to_numpy(), marker="D", color="tab:red", s=18,
                            zorder=3, label="mean over genes")  # fmt: skip
    ax.legend(handles=[draw_means], fontsize=7, frameon=False, loc="best")
    ax.set_title("mean over genes: " + ", ".join(f"{m} {v:.3f}" for m, v in means.items()), fontsize=9)
    ax.set_ylabel(f"per-gene {METRIC_NAMES.get(metric, metric)}")
    ax.set_xlabel("")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.figure.tight_layout()
    return _finish(ax, show, save)
