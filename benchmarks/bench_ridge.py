"""Accuracy of the ridge baseline on real data, with honest folds.

- HER2ST patient C, sections C2-C6 (the sections with public images): leave-one-section-out. All
  sections come from one patient, so this is a within-patient benchmark (optimistic by design).
- Mouse olfactory bulb (STUtility), 4 sections of 2 individuals: leave-one-individual-out.

Targets: log1p (normalize_total 1e4). Genes: the 250 most expressed, selected on each fold's training
slides. Ridge penalty: chosen on held-out training slides/patients. PCC(H): the 50 genes with the best
inner-validation Pearson on the training slides (never chosen on test results).

Usage::

    python benchmarks/bench_ridge.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

import stpredict as st


def run(adata, folds, label: str, size: float, unit: str, rep: str = "X_handcrafted") -> pd.DataFrame:
    st.pp.normalize(adata)
    started = time.perf_counter()
    if rep not in adata.obsm:
        st.pp.image_features(adata, size=size, unit=unit, show_progress_bar=False, key_added=rep)
    feature_time = time.perf_counter() - started
    table = st.tl.cross_validate(adata, splits=folds, model="ridge", use_rep=rep, show_progress_bar=False)
    table.insert(0, "dataset", label)
    print(f"\n{label}: {adata.n_obs} spots, features {feature_time:.1f} s")
    print(table.round(3).to_string(index=False))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ridge.csv"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    her2st = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=args.shared / "her2st")
    folds = st.tl.make_splits(her2st, method="leave_one_slide_out", allow_shared_patients=True)
    tables = [run(her2st, folds, "HER2ST C2-C6 (leave-one-section-out)", 224, "px")]

    mob = st.datasets.mob(path=args.shared / "mob")
    folds = st.tl.make_splits(mob, method="leave_one_patient_out")
    # MOB images have ~8.7 µm/px: a 224 px patch would cover the whole section; use one array pitch (200 µm)
    tables.append(run(mob, folds, "MOB (leave-one-individual-out)", 200, "um"))

    results = pd.concat(tables, ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out, index=False)
    summary = results.groupby("dataset", sort=False)[["pcc_m", "pcc_h", "pcc_patch", "mse", "mae", "r2"]].mean()
    print("\nmean over held-out slides:")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
