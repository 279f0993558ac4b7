"""How far to trust predictions: interval calibration, and how unlike the training slides each slide is."""

from __future__ import annotations

from os import PathLike

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import derived_key
from .._validate import check_adata, spot_libraries
from ._spatial import _finish


def calibration_curve(
    table: pd.DataFrame,
    *,
    ax=None,
    show: bool | None = None,
    save: str | PathLike | None = None,
):
    """Nominal vs empirical coverage of prediction intervals (the table of :func:`stpredict.tl.interval_coverage`).

    One line per interval method, points labelled by mean width; a calibrated model sits on the diagonal,
    below it its intervals are too narrow (over-confident).

    Parameters
    ----------
    table
        Rows with ``method``, ``nominal``, ``coverage`` and ``width`` (several tables concatenated with a
        ``model`` column give one line per model and method).
    ax, show, save
        As in scanpy: draw on ``ax``; show unless ``save`` is given; ``show=False`` returns the Axes.

    Examples
    --------
    >>> import pandas as pd, stpredict as st
    >>> table = pd.DataFrame({"method": ["adaptive"] * 2, "nominal": [0.8, 0.9], "coverage": [0.78, 0.91],
    ...                       "width": [1.2, 1.6]})
    >>> ax = st.pl.calibration_curve(table, show=False)
    >>> ax.get_xlabel()
    'nominal coverage'
    """
    missing = {"method", "nominal", "coverage", "width"} - set(table.columns)
    if missing:
        msg = f"The table needs columns {sorted(missing)} (from st.tl.interval_coverage); it has {list(table.columns)}."
        raise KeyError(msg)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8, label="calibrated")
    by = ["model", "method"] if "model" in table else ["method"]
    for k, (name, rows) in enumerate(table.groupby(by, sort=False)):
        rows = rows.sort_values("nominal")
        label = " / ".join(map(str, name if isinstance(name, tuple) else (name,)))
        line = ax.plot(rows["nominal"], rows["coverage"], marker="o", label=label)[0]
        for _, row in rows.iterrows():  # each line's labels in their own row below its points: no overlap
            ax.annotate(
                f"{row['width']:.2f}", (row["nominal"], row["coverage"]), fontsize=6, color=line.get_color(),
                xytext=(4, -9 - 8 * k), textcoords="offset points",
            )  # fmt: skip
    low = float(min(table["nominal"].min(), table["coverage"].min())) - 0.05
    ax.set_xlim(max(low, 0), 1.0)
    ax.set_ylim(max(low, 0), 1.0)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage (mean over genes)")
    ax.set_title("prediction intervals (labels: mean width)", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.figure.tight_layout()
    return _finish(ax, show, save)


def ood(
    adata: AnnData,
    key: str,
    *,
    ax=None,
    show: bool | None = None,
    save: str | PathLike | None = None,
):
    """Out-of-distribution score of every slide: its spots' spread and median, against the warning threshold 1.

    A spot's score is its distance to the training images in the model's representation, in units of the
    distance that 95 % of a held-out training slide's spots stay within: above 1, a slide's spots are further
    from the training data than that, and its predictions deserve less trust.

    Parameters
    ----------
    adata
        Slides predicted by a model that reads a representation: ``obs[f'{key}_ood']`` and ``uns[key]['ood']``.
    key
        The predictions' key (``key_added`` of ``predict``).
    ax, show, save
        As in scanpy: draw on ``ax``; show unless ``save`` is given; ``show=False`` returns the Axes.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> train, test = adata[adata.obs.library_id != "C4"].copy(), adata[adata.obs.library_id == "C4"].copy()
    >>> st.tl.fit(train, genes=["ERBB2"]).predict(test)
    >>> ax = st.pl.ood(test, "pred_ridge", show=False)
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['C4']
    """
    check_adata(adata)
    column = derived_key(key, "ood")
    if column not in adata.obs or "ood" not in adata.uns.get(key, {}):
        msg = (
            f"No out-of-distribution scores for {key!r} (adata.obs[{column!r}], adata.uns[{key!r}]['ood']): predict "
            "with a model that reads an image representation (models that learn from pixels alone have none)."
        )
        raise KeyError(msg)
    per_slide = pd.Series(adata.uns[key]["ood"]["slides"], dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.6, 1.6 + 0.6 * len(per_slide)), 3.6))
    slides = spot_libraries(adata)
    spread = [adata.obs[column].to_numpy()[slides == s] for s in per_slide.index.astype(str)]
    positions = np.arange(len(per_slide))
    ax.boxplot(spread, positions=positions, widths=0.6, showfliers=False, medianprops={"color": "none"})
    colours = np.where(per_slide.to_numpy() > 1, "tab:red", "tab:blue")
    ax.scatter(positions, per_slide.to_numpy(), color=colours, marker="D", s=24, zorder=3, label="median")
    ax.set_xticks(positions, per_slide.index.astype(str))
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.text(ax.get_xlim()[1], 1.0, " warning", va="center", fontsize=7)
    ax.set_ylabel("distance to the training images\n(1 = 95 % of held-out training spots)", fontsize=8)
    ax.set_xlabel("slide")
    ax.set_title(
        f"out-of-distribution score ({key})\nboxes: its spots' spread; diamonds: the slide's median", fontsize=8
    )
    if len(per_slide) > 8:
        ax.tick_params(axis="x", labelrotation=90)
    ax.figure.tight_layout()
    return _finish(ax, show, save)
