"""A Xenium output folder with a post-run H&E, in the real file formats, built from a bundled H&E crop.

``transcripts.parquet`` (feature_name, x/y/z_location in µm, qv, cell_id), ``experiment.xenium`` (pixel size
0.2125 µm), ``cells.parquet`` and ``cell_feature_matrix.h5``, the H&E as a pyramidal TIFF and the alignment
CSV mapping H&E pixels to Xenium pixels (scale, a 5° rotation, an offset). Transcripts of ``DARK`` are
likelier where the H&E under them is dark, ``PALE`` where it is pale, ``FLAT`` anywhere; control probes and
low-quality transcripts are mixed in (the reader must drop them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image

import stpredict as st
from stpredict.datasets._visium_hd_example import write_10x_h5

PIXEL_SIZE = 0.2125


def alignment_matrix(he_mpp: float) -> np.ndarray:
    """H&E pixel -> Xenium pixel: scale he_mpp / 0.2125, rotate 5°, shift."""
    angle = np.deg2rad(5.0)
    scale = he_mpp / PIXEL_SIZE
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.block([[rotation, np.array([[400.0], [250.0]])], [np.zeros((1, 2)), np.ones((1, 1))]])


def write_xenium(root: Path, *, n_transcripts: int = 120_000, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write ``root/xenium`` (the output folder), ``root/he.tif`` and ``root/he_imagealignment.csv``."""
    files = st.datasets.her2st_crop_files()["C4"]
    he_mpp = float(st.datasets.her2st_crop().uns["spatial"]["C4"]["scalefactors"]["microns_per_pixel"])
    rgb = np.asarray(Image.open(files["image"]).convert("RGB"))
    root.mkdir(parents=True, exist_ok=True)
    st.io.write_pyramidal_tiff(rgb, root / "he.tif", mpp=he_mpp)
    matrix = alignment_matrix(he_mpp)
    pd.DataFrame(matrix).to_csv(root / "he_imagealignment.csv", header=False, index=False)
    rng = np.random.default_rng(seed)
    # transcripts uniformly over the H&E's inner part, in H&E pixels, then mapped to Xenium µm
    h, w = rgb.shape[:2]
    he_xy = np.column_stack(
        [rng.uniform(0.1 * w, 0.9 * w, n_transcripts), rng.uniform(0.1 * h, 0.9 * h, n_transcripts)]
    )
    grey = rgb.mean(axis=2) / 255.0
    dark = 1 - grey[he_xy[:, 1].astype(int), he_xy[:, 0].astype(int)]
    dark = (dark - dark.min()) / (dark.max() - dark.min())
    draw = rng.uniform(size=n_transcripts)
    gene = np.where(draw < 0.45 * dark, "DARK", np.where(draw < 0.45, "PALE", "FLAT")).astype("U32")
    pale = (gene == "PALE") & (rng.uniform(size=n_transcripts) < dark)  # PALE falls where it is dark
    gene[pale] = "FLAT"
    gene[rng.uniform(size=n_transcripts) < 0.05] = "NegControlProbe_00042"
    qv = np.where(rng.uniform(size=n_transcripts) < 0.1, 10.0, 35.0)  # 10 % low quality
    xenium_px = np.column_stack([he_xy, np.ones(n_transcripts)]) @ matrix.T
    um = xenium_px[:, :2] * PIXEL_SIZE
    out = root / "xenium"
    out.mkdir(exist_ok=True)
    cell = (np.floor(um[:, 0] / 15).astype(int) * 10_000 + np.floor(um[:, 1] / 15).astype(int)).astype(str)
    pd.DataFrame({
        "transcript_id": np.arange(n_transcripts, dtype=np.uint64), "cell_id": cell,
        "overlaps_nucleus": np.zeros(n_transcripts, np.uint8), "feature_name": gene,
        "x_location": um[:, 0].astype(np.float32), "y_location": um[:, 1].astype(np.float32),
        "z_location": np.full(n_transcripts, 5.0, np.float32), "qv": qv.astype(np.float32),
    }).to_parquet(out / "transcripts.parquet")  # fmt: skip
    (out / "experiment.xenium").write_text(json.dumps({"pixel_size": PIXEL_SIZE, "analysis_sw_version": "xenium-2.0"}))
    # cells: 15 µm squares of the same transcripts (a stand-in segmentation), with their centroids
    keep = (qv >= 20) & ~np.char.startswith(gene.astype(str), "NegControl")
    cells, cell_index = np.unique(cell[keep], return_inverse=True)
    genes, gene_index = np.unique(gene[keep], return_inverse=True)
    counts = sp.csr_matrix((np.ones(keep.sum()), (cell_index, gene_index)), shape=(len(cells), len(genes)))
    centroid = pd.DataFrame(um[keep]).groupby(cell_index).mean().to_numpy()
    pd.DataFrame({"cell_id": cells, "x_centroid": centroid[:, 0], "y_centroid": centroid[:, 1],
                  "cell_area": np.full(len(cells), 150.0)}).to_parquet(out / "cells.parquet")  # fmt: skip
    write_10x_h5(out / "cell_feature_matrix.h5", counts, cells.tolist(), genes.tolist())
    return out, root / "he.tif", root / "he_imagealignment.csv"
