"""Image representations: throughput on 2 CPU cores and ridge accuracy per representation.

HER2ST patient C, sections C2-C6 (910 spots, 224 px patches at ~0.69 µm/px). Throughput is measured
twice: the extractor alone on patches already in memory, and end to end (``st.pp.image_features``,
including decoding each ~9k x 10k px JPEG once). Accuracy: ridge with leave-one-section-out, 250 most
expressed genes per fold, as in ``bench_ridge.py``.

Usage::

    python benchmarks/bench_features.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

import stpredict as st
from stpredict.pp._features import _METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/features.csv"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    adata = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=args.shared / "her2st")
    st.pp.normalize(adata)
    patches = st.pp.extract_patches(adata[adata.obs["library_id"] == "C3"])
    mpp = adata.uns["spatial"]["C3"]["scalefactors"]["microns_per_pixel"]
    rows = []
    for method in ("handcrafted", "nuclei"):
        extractor = _METHODS[method][0]
        extractor(patches[:4], mpp, 1)  # warm-up
        start = time.perf_counter()
        extractor(patches, mpp, 1)
        alone = len(patches) / (time.perf_counter() - start)
        start = time.perf_counter()
        st.pp.image_features(adata, method=method, n_jobs=2, show_progress_bar=False)
        end_to_end = adata.n_obs / (time.perf_counter() - start)
        rows.append({"representation": method, "per_s_extractor_1_core": alone, "per_s_end_to_end_2_jobs": end_to_end})
        print(f"{method}: {alone:.1f} patches/s (extractor, 1 core), {end_to_end:.1f} patches/s (end to end, n_jobs=2)")
    adata.obsm["X_handcrafted+nuclei"] = np.hstack([adata.obsm["X_handcrafted"], adata.obsm["X_nuclei"]])

    folds = st.tl.make_splits(adata, method="leave_one_slide_out", allow_shared_patients=True)
    rows.append({"representation": "handcrafted+nuclei"})
    for row in rows:
        rep = f"X_{row['representation']}"
        table = st.tl.cross_validate(adata, splits=folds, use_rep=rep, show_progress_bar=False, key_added="cv")
        row.update(table[["pcc_m", "pcc_h", "mse"]].mean().to_dict())
        print(f"{rep}: PCC(M) {row['pcc_m']:.3f}, PCC(H) {row['pcc_h']:.3f}, MSE {row['mse']:.3f}")
    results = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out, index=False)
    print(results.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
