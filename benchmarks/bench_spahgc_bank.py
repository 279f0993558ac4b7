"""SpaHGC prediction against a large reference bank: extra memory and time of predicting one slide.

A SpaHGC model is fitted on HER2ST sections C3-C6 (handcrafted features), then its bank is replaced by
``--bank`` reference spots (the real training spots resampled with a little noise, so that retrieval
works on realistic embeddings; expression drawn the same way) and section C2 is predicted. Reported:
the process's resident memory before predicting (model and bank loaded) and its peak while predicting
(Linux ``VmHWM``, reset just before), and the wall time; ``--dim`` pads the representation to a
foundation-model width (e.g. 1024 for UNI) to size the bank as a user's would be.

Usage::

    python benchmarks/bench_spahgc_bank.py --shared ../shared/data --bank 100000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import stpredict as st
from stpredict.models.spahgc import ReferenceBank


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--bank", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=0, help="pad the representation to this width (0: as is)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    adata = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=args.shared / "her2st")
    st.pp.normalize(adata)
    st.pp.image_features(adata, show_progress_bar=False)
    if args.dim > adata.obsm["X_handcrafted"].shape[1]:
        rng = np.random.default_rng(0)
        extra = rng.normal(size=(adata.n_obs, args.dim - adata.obsm["X_handcrafted"].shape[1]))
        adata.obsm["X_wide"] = np.hstack([adata.obsm["X_handcrafted"], extra]).astype(np.float32)
        rep = "X_wide"
    else:
        rep = "X_handcrafted"
    train, test = adata[adata.obs.library_id != "C2"].copy(), adata[adata.obs.library_id == "C2"].copy()
    predictor = st.tl.fit(train, model="spahgc", use_rep=rep, model_params={"max_epochs": args.epochs})

    real = predictor.model.bank_
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(real), size=args.bank)
    noise = lambda a: (a + 0.1 * rng.standard_normal(a.shape)).astype(np.float32)  # noqa: E731
    predictor.model.bank_ = ReferenceBank(
        embeddings=noise(real.embeddings[pick]),
        expression=noise(real.expression[pick]),
        slide=np.char.add("bank", (np.arange(args.bank) % 50).astype(str)),
        spot=np.arange(args.bank).astype(str),
    )
    before = rss_mb("VmRSS:")
    reset_peak()
    started = time.perf_counter()
    st.tl.predict(predictor, test, key_added="pred")
    elapsed = time.perf_counter() - started
    peak = rss_mb("VmHWM:")
    bank_mb = (predictor.model.bank_.embeddings.nbytes + predictor.model.bank_.expression.nbytes) / 2**20
    print(
        f"bank {args.bank} spots x {predictor.n_features} features + {len(predictor.genes)} genes ({bank_mb:.0f} MB); "
        f"predicting {test.n_obs} spots: {elapsed:.1f} s, resident {before:.0f} MB before, peak {peak:.0f} MB, "
        f"extra {peak - before:.0f} MB"
    )


if __name__ == "__main__":
    main()
