"""Super-resolution at slide scale: time and peak memory per mm² of tissue, 8 µm bins and cells, on a real WSI.

A real H&E image (HER2ST section C6, 9270 x 9930 px at 0.69 µm/px, ~6.4 x 6.8 mm) is written as a pyramidal
TIFF and read with ``st.io.read_wsi`` (lazily, region by region). An iStar model trained on the bundled crop
(50 genes) super-resolves the whole slide into 8 µm bins, then the nuclei of a 2 x 2 mm region, each run in a
fresh process so that its peak resident memory (``VmHWM``) is its own.

Usage::

    python benchmarks/bench_superres_scale.py --shared ../shared/data --out benchmarks/results/superres_scale.csv
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

MPP = 0.6884  # HER2ST's C6 image (st.datasets.her2st records it from the spot pitch)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare(shared: Path, work: Path) -> tuple[Path, Path]:
    """The pyramidal TIFF of C6 and an iStar model trained on the bundled crop (50 genes)."""
    from PIL import Image

    import stpredict as st

    (image,) = (shared / "her2st" / "images").glob("C6_*.jpg")  # e.g. C6_5714_HE_BT_D3.jpg
    rgb = np.asarray(Image.open(image).convert("RGB"))
    slide = st.io.write_pyramidal_tiff(rgb, work / "C6.tif", mpp=MPP)
    crop = st.datasets.her2st_crop()
    st.pp.normalize(crop)
    genes = list(crop.var_names[np.argsort(-np.asarray(crop.layers["log1p"].mean(axis=0)).ravel())[:50]])
    model = st.tl.fit(crop, model="istar", genes=genes, model_params={"max_epochs": 20}).save(work / "istar.stpredict")
    return slide, model


def run(kind: str, slide: Path, model: Path) -> dict:
    """One measured run in this (fresh) process."""
    import stpredict as st

    adata = st.io.read_wsi(slide, mpp=MPP)
    predictor = st.tl.load_model(model)
    started = time.perf_counter()
    if kind == "bins":
        out = st.tl.super_resolve(predictor, adata)
        area_mm2 = out.n_obs * (8e-3) ** 2
    else:  # the nuclei of a 2 x 2 mm region in the middle of the section
        side = 2000 / MPP
        x0, y0 = 3500.0, 3500.0
        out = st.tl.super_resolve(predictor, adata, cells=True, region=(x0, y0, x0 + side, y0 + side))
        area_mm2 = 4.0
    seconds = time.perf_counter() - started
    return {
        "kind": kind,
        "n_obs": out.n_obs,
        "n_genes": out.n_vars,
        "area_mm2": area_mm2,
        "seconds": seconds,
        "s_per_mm2": seconds / area_mm2,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "superres_scale.csv")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    context = get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        slide, model = pool.submit(prepare, args.shared, work).result()
    rows = []
    for kind in ("bins", "cells"):
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            rows.append(pool.submit(run, kind, slide, model).result())
        print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
