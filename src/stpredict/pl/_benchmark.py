"""The benchmark figure: per-slide scores joined by slide, and the pooled score beside them."""

from __future__ import annotations

from os import PathLike

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData

from ._spatial import _finish

METRIC_LABELS = {"pcc_m": "PCC(M)", "pcc_h": "PCC(H)", "mse": "MSE", "mae": "MAE"}


def benchmark(
    data: pd.DataFrame | AnnData,
    *,
    metric: str = "pcc_m",
    key: str = "benchmark",
    ax=None,
    show: bool | None = None,
    save: str | PathLike | None = None,
):
    """Each held-out slide's score per model, joined across models, with the mean and the pooled score.

    Grey lines join one slide's scores across models (the comparison is paired: slides differ more from
    each other than models do); black bars are the means over slides; red diamonds the score of all
    held-out spots pooled, which slide-to-slide differences inflate.

    Parameters
    ----------
    data
        The table of :func:`stpredict.tl.benchmark`, or an AnnData holding it in ``uns[key]``.
    metric
        ``'pcc_m'``, ``'pcc_h'``, ``'mse'`` or ``'mae'``.
    key
        Where the table is in ``uns`` when ``data`` is an AnnData.
    ax, show, save
        As in scanpy: draw on ``ax``; show unless ``save`` is given; ``show=False`` returns the Axes.

    Examples
    --------
    >>> import pandas as pd, stpredict as st
    >>> table = pd.DataFrame({"model": ["ridge"] * 3 + ["mlp"] * 3, "library_id": ["s1", "s2", "pooled"] * 2,
    ...                       "pcc_m": [0.2, 0.3, 0.5, 0.25, 0.28, 0.55]})
    >>> st.pl.benchmark(table, show=False).get_ylabel()
    'PCC(M) per held-out slide'
    """
    table = data.uns[key]["table"] if isinstance(data, AnnData) else data
    if metric not in table:
        msg = f"st.pl.benchmark: no column {metric!r} in the table; choose from {list(METRIC_LABELS)}."
        raise ValueError(msg)
    models = list(pd.unique(table["model"]))
    per_slide = table[table["library_id"] != "pooled"].pivot_table(index="library_id", columns="model", values=metric)
    per_slide = per_slide.reindex(columns=models)
    pooled = table[table["library_id"] == "pooled"].set_index("model")[metric].reindex(models)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.8 + 1.0 * len(models), 3.4))
    x = np.arange(len(models))
    for _, scores in per_slide.iterrows():
        ax.plot(x, scores.to_numpy(), color="0.7", linewidth=0.8, marker="o", markersize=3, zorder=1)
    means = per_slide.mean(axis=0).to_numpy()
    ax.hlines(means, x - 0.25, x + 0.25, color="black", linewidth=2, zorder=2, label="mean over slides")
    if pooled.notna().any():
        ax.scatter(x, pooled.to_numpy(), marker="D", color="tab:red", s=22, zorder=3, label="all spots pooled")
    ax.set_xticks(x, models, rotation=30, ha="right")
    label = METRIC_LABELS.get(metric, metric)
    ax.set_ylabel(f"{label} per held-out slide")
    ax.set_title(f"{len(per_slide)} held-out slides; lines join a slide's scores", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="best")
    ax.figure.tight_layout()
    return _finish(ax, show, save)
