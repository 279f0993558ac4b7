"""The super-resolution tables of ``docs/benchmarks.md``, from ``benchmarks/results/superres_*.csv``.

``benchmarks/report.py`` writes them (with every other generated table) between ``<!-- superres:NAME -->``
and ``<!-- /superres:NAME -->``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
DATASETS = {  # results file stem: label
    "superres_her2st": "HER2ST (train C3-C5, test C6), 8 µm bins",
    "superres_mob": "MOB (train MOB1-2, test MOB3), 40 µm bins",
    "superres_visium_hd_example": "Visium HD example (train run A's pseudo-spots, test run B's 8 µm bins)",
}
METHODS = [
    "istar",
    "istar_anchored",
    "istar_paper",
    "istar_no_context",
    "ridge_bin_patch",
    "ridge_nearest",
    "oracle",
    "ridge",
]


def bins_table() -> str:
    """Pearson at the held-out bins and at the held-out spots, per data set (columns) and method (rows)."""
    frames = {label: pd.read_csv(RESULTS / f"{stem}.csv") for stem, label in DATASETS.items()}
    header = "| method | " + " | ".join(f"{label}: bins / spots" for label in frames) + " |"
    lines = [header, "|---|" + "---|" * len(frames)]
    for method in METHODS:
        cells = []
        for frame in frames.values():
            rows = frame[frame["method"] == method].set_index("level")["pcc_m"]
            cells.append(" / ".join(f"{rows[level]:.3f}" if level in rows else "–" for level in ("bin", "spot")))
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def real_table() -> str:
    """Real held-out sections: istar's spots (the mean of its bins) against ridge, per data set."""
    frame = pd.read_csv(RESULTS / "models_istar.csv")
    summary = frame.groupby(["dataset", "model"]).agg(
        pcc_m=("pcc_m", "mean"), val=("val_score", "mean"), fit_s=("fit_s", "mean")
    )
    lines = ["| data set | model | PCC(M), mean over held-out sections | inner validation | fit per fold (s) |"]
    lines.append("|---|---|---|---|---|")
    for (dataset, model), row in summary.iterrows():
        lines.append(f"| {dataset} | `{model}` | {row.pcc_m:.3f} | {row.val:.3f} | {row.fit_s:.0f} |")
    return "\n".join(lines)


def inner_table() -> str:
    frame = pd.read_csv(RESULTS / "superres_istar_inner.csv")
    lines = ["| option | model_params | inner validation PCC | fit (s) |", "|---|---|---|---|"]
    for row in frame.itertuples():
        lines.append(f"| {row.option} | `{row.model_params}` | {row.inner_validation:.3f} | {row.fit_s:.0f} |")
    return "\n".join(lines)


def scale_table() -> str:
    frame = pd.read_csv(RESULTS / "superres_scale.csv")
    lines = ["| output | observations | tissue area (mm²) | time (s) | s per mm² | peak memory (MB) |"]
    lines.append("|---|---|---|---|---|---|")
    for row in frame.itertuples():
        lines.append(
            f"| {row.kind} | {row.n_obs:,} | {row.area_mm2:.1f} | {row.seconds:.0f} | {row.s_per_mm2:.1f} | "
            f"{row.peak_rss_mb:.0f} |"
        )
    return "\n".join(lines)


CELL_METHODS = [
    "spot2cell",
    "spot2cell_sum",
    "spot2cell_paper",
    "spot2cell_no_context",
    "istar_cells",
    "ridge_nearest",
    "oracle",
    "ridge",
]


def cells_table() -> str:
    """Pearson at the held-out nuclei and spots (synthetic per-nucleus truth), and each model's fit time."""
    frame = pd.read_csv(RESULTS / "superres_cells_her2st.csv")
    lines = ["| method | nuclei | spots | fit (s) |", "|---|---|---|---|"]
    for method in CELL_METHODS:
        rows = frame[frame["method"] == method].set_index("level")
        if rows.empty:
            continue
        cells = [f"{rows.loc[level, 'pcc_m']:.3f}" if level in rows.index else "–" for level in ("cell", "spot")]
        fit = f"{rows.loc['spot', 'time_s']:.0f}" if "spot" in rows.index and method != "ridge" else "–"
        lines.append(f"| `{method}` | " + " | ".join(cells) + f" | {fit} |")
    return "\n".join(lines)


TABLES = {
    "bins": bins_table,
    "cells": cells_table,
    "real": real_table,
    "inner": inner_table,
    "scale": scale_table,
}
