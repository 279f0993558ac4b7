"""iStar's non-paper options chosen on the inner validation of one fold's training slides (never a test section).

HER2ST fold "C2 held out": the model is trained on C3-C6 and scores the training slide it holds out itself
(``predictor.validation``); C2 is not read. 100 most expressed genes of the training slides.

Usage::

    python benchmarks/bench_istar_inner.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import stpredict as st

CONFIGS = {
    "default": {},
    "loss_space=linear (paper)": {"loss_space": "linear"},
    "bin_output=log": {"bin_output": "log"},
    "no context": {"context_um": []},
    "paper output floor, no linear start": {"output_floor": "spot_min", "linear_start": False, "loss_space": "linear"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "superres_istar_inner.csv")
    args = parser.parse_args()
    adata = st.datasets.her2st(["C3", "C4", "C5", "C6"], path=args.shared / "her2st")
    st.pp.normalize(adata)
    genes = list(adata.var_names[np.argsort(-np.asarray(adata.layers["log1p"].mean(axis=0)).ravel())[:100]])
    rows = []
    for name, params in CONFIGS.items():
        started = time.perf_counter()
        predictor = st.tl.fit(adata, model="istar", genes=genes, device="cpu", model_params=params)
        rows.append({"option": name, "model_params": str(params), "inner_validation": predictor.validation.score,
                     "held_out": ",".join(predictor.validation.held_out), "fit_s": time.perf_counter() - started})  # fmt: skip
        print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
