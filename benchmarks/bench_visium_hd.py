"""A whole Visium HD slide at 8 µm: read, image features, predict and write in bounded memory.

Writes a synthetic Space Ranger ``outs`` folder in the real formats (``binned_outputs/square_008um`` with a
10x HDF5 of every bin under tissue, ``tissue_positions.parquet`` of the whole capture area, scale factors with ``microns_per_pixel``,
the hires PNG) over a synthetic pyramidal H&E (``bench_wsi.write_synthetic``, JPEG tiles, 0.5 µm/px), with
``--genes`` genes and about ``--counts`` UMIs per bin. Then, in a fresh process whose peak resident memory is
its own: ``st.io.read_visium_hd`` (image opened lazily), ``st.pp.image_features`` on every bin (handcrafted,
``--patch`` px around each bin centre, read region by region from the pyramid), ridge trained on
``--train`` bins of the slide, ``predict`` on every bin (predictions in ``obsm``; no spots x all-genes layer)
and ``write_h5ad``. Target: peak under 4 GB.

Usage::

    python benchmarks/bench_visium_hd.py --side 40000 --out benchmarks/results/visium_hd.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_wsi import MPP, peak_rss_mb, tissue_pieces, write_synthetic  # noqa: E402

BIN_UM = 8


def write_outs(root: Path, side: int, n_genes: int, counts_per_bin: int, seed: int = 0) -> int:
    """``root/outs/binned_outputs/square_008um`` and ``root/image.tif``; returns the number of bins."""
    import h5py
    import scipy.sparse as sp
    import tifffile
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    image = root / "image.tif"
    if not image.exists():
        write_synthetic(image, side)
    # The capture area: the bins over the bounding box of the four tissue discs; in tissue: those inside one.
    pieces = tissue_pieces(side)
    low = min(x - r for x, _, r in pieces)
    n = int((max(x + r for x, _, r in pieces) - low) * MPP // BIN_UM)
    rows, cols = np.divmod(np.arange(n * n), n)
    y, x = low + (rows + 0.5) * BIN_UM / MPP, low + (cols + 0.5) * BIN_UM / MPP
    in_tissue = np.zeros(n * n, dtype=bool)
    for px, py, r in pieces:
        in_tissue |= (x - px) ** 2 + (y - py) ** 2 < r**2
    barcodes = np.array([f"s_008um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)], dtype="S")
    rng = np.random.default_rng(seed)
    n_bins = int(in_tissue.sum())
    per_bin = rng.poisson(counts_per_bin, size=n_bins)
    genes = np.minimum(rng.zipf(1.2, size=per_bin.sum()) - 1, n_genes - 1)  # a few genes take most UMIs
    bins = np.repeat(np.arange(n_bins), per_bin)
    counts = sp.csc_matrix((np.ones(len(genes), np.int32), (genes, bins)), shape=(n_genes, n_bins))
    counts.sum_duplicates()
    folder = root / "outs" / "binned_outputs" / "square_008um"
    (folder / "spatial").mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        group = f.create_group("matrix")
        group.create_dataset("barcodes", data=barcodes[in_tissue])
        group.create_dataset("data", data=counts.data)
        group.create_dataset("indices", data=counts.indices.astype(np.int64))
        group.create_dataset("indptr", data=counts.indptr.astype(np.int64))
        group.create_dataset("shape", data=np.array(counts.shape, dtype=np.int32))
        features = group.create_group("features")
        features.create_dataset("id", data=np.array([f"ENSG{i:011d}" for i in range(n_genes)], dtype="S"))
        features.create_dataset("name", data=np.array([f"GENE{i}" for i in range(n_genes)], dtype="S"))
        features.create_dataset("feature_type", data=np.array([b"Gene Expression"] * n_genes))
        features.create_dataset("genome", data=np.array([b"GRCh38"] * n_genes))
        features.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
    pd.DataFrame(
        {
            "barcode": barcodes.astype(str),
            "in_tissue": in_tissue.astype(int),
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": y,
            "pxl_col_in_fullres": x,
        }
    ).to_parquet(folder / "spatial" / "tissue_positions.parquet")
    with tifffile.TiffFile(image) as tif:
        level = next(page for page in tif.pages if max(page.shape[:2]) <= 4000)
        overview = level.asarray()
    scale = 2000 / side
    Image.fromarray(overview).resize((2000, 2000)).save(folder / "spatial" / "tissue_hires_image.png")
    scalefactors = {
        "spot_diameter_fullres": BIN_UM / MPP, "bin_size_um": float(BIN_UM), "microns_per_pixel": MPP,
        "tissue_hires_scalef": scale, "tissue_lowres_scalef": scale * 0.3, "regist_target_img_scalef": scale,
        "fiducial_diameter_fullres": 10.0,
    }  # fmt: skip
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    return n_bins


def run(root: str, patch: int, n_train: int, out: str) -> dict:
    """Read, features, fit on a sample, predict all, write: in this (fresh) process."""
    import stpredict as st

    row: dict = {}
    started = time.perf_counter()
    adata = st.io.read_visium_hd(Path(root) / "outs", bin_size=BIN_UM, source_image_path=Path(root) / "image.tif")
    row.update(bins=adata.n_obs, genes=adata.n_vars, read_s=time.perf_counter() - started, peak_mb_read=peak_rss_mb())
    started = time.perf_counter()
    st.pp.image_features(adata, size=patch, show_progress_bar=False)
    row.update(features_s=time.perf_counter() - started, peak_mb_features=peak_rss_mb())
    started = time.perf_counter()
    train = adata[np.random.default_rng(0).choice(adata.n_obs, n_train, replace=False)].copy()
    st.pp.normalize(train)
    st.pp.select_genes(train, n_genes=100)
    model = st.tl.fit(train, model="ridge", show_progress_bar=False)
    del train
    row.update(fit_s=time.perf_counter() - started, peak_mb_fit=peak_rss_mb())
    started = time.perf_counter()
    model.predict(adata, key_added="pred")
    row.update(predict_s=time.perf_counter() - started, peak_mb_predict=peak_rss_mb())
    started = time.perf_counter()
    adata.write_h5ad(out)
    row.update(write_s=time.perf_counter() - started, peak_mb=peak_rss_mb(), h5ad_mb=Path(out).stat().st_size / 1e6)
    row.update(finite=bool(np.isfinite(np.asarray(adata.obsm["pred"])).all()), layers=sorted(adata.layers))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=40000, help="image side in px at 0.5 µm/px (40,000: ~503,000 bins)")
    parser.add_argument("--genes", type=int, default=18000)
    parser.add_argument("--counts", type=int, default=50, help="mean UMIs per 8 µm bin")
    parser.add_argument("--patch", type=int, default=32, help="patch side in px around each bin (16 µm)")
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/stpredict-bench/visium_hd"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/visium_hd.csv"))
    args = parser.parse_args()
    root = args.dir / f"hd_{args.side}"
    if not (root / "outs").exists():
        started = time.perf_counter()
        n = write_outs(root, args.side, args.genes, args.counts)
        print(f"wrote {n} bins in {time.perf_counter() - started:.0f} s", flush=True)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        row = pool.submit(run, str(root), args.patch, args.train, str(args.dir / "predicted.h5ad")).result()
    row.update(side=args.side, patch_px=args.patch)
    print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
