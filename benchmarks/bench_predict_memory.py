"""Extra memory of predicting 250 genes for a Visium HD-sized slide (600,000 spots, 18,000 genes) with ridge.

A synthetic slide: random 44-d features in ``obsm`` (as handcrafted features), an empty sparse count matrix
over 18,000 genes, a ridge model trained on 5,000 synthetic spots for 250 of those genes. Extra memory is the
peak resident memory during ``predict`` (sampled every 5 ms) minus the resident memory just before it.
Target: under 2 GB. Before predictions stopped allocating spots x all genes, the dense NaN layer alone was
600,000 x 18,000 x 4 bytes = 43 GB.

Usage::

    python benchmarks/bench_predict_memory.py --spots 600000 --genes 18000 --predicted 250
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp

import stpredict as st


def synthetic(n_spots: int, n_genes: int, n_features: int, rng: np.random.Generator, counts: bool) -> ad.AnnData:
    genes = [f"G{i:05d}" for i in range(n_genes)]
    x = sp.csr_matrix((n_spots, n_genes), dtype=np.float32)
    obs = pd.DataFrame({"library_id": pd.Categorical(["hd"] * n_spots)}, index=[f"b{i}" for i in range(n_spots)])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=genes))
    adata.obsm["X_handcrafted"] = rng.normal(size=(n_spots, n_features)).astype(np.float32)
    side = int(np.ceil(np.sqrt(n_spots)))
    adata.obsm["spatial"] = np.column_stack([np.arange(n_spots) % side, np.arange(n_spots) // side]) * 16.0
    if counts:
        weights = rng.normal(size=(n_features, n_genes))
        adata.layers["log1p"] = (adata.obsm["X_handcrafted"] @ weights + rng.normal(size=(n_spots, n_genes))).astype(
            np.float32
        )
    return adata


class PeakSampler(threading.Thread):
    """Resident memory of this process, sampled until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.process, self.peak, self.running = psutil.Process(), 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spots", type=int, default=600_000)
    parser.add_argument("--genes", type=int, default=18_000)
    parser.add_argument("--predicted", type=int, default=250)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    train = synthetic(5_000, args.predicted, 44, rng, counts=True)
    train.obs["library_id"] = pd.Categorical(np.repeat(["t1", "t2"], [2_500, 2_500]))
    predictor = st.tl.fit(train, genes=list(train.var_names), use_rep="X_handcrafted")
    slide = synthetic(args.spots, args.genes, 44, rng, counts=False)
    slide.var_names = [*train.var_names, *slide.var_names[args.predicted :]]
    before = psutil.Process().memory_info().rss
    sampler = PeakSampler()
    sampler.start()
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor.predict(slide, key_added="pred")
    elapsed = time.perf_counter() - started
    sampler.running = False
    sampler.join()
    print(
        json.dumps(
            {
                "spots": args.spots,
                "genes": args.genes,
                "predicted": args.predicted,
                "seconds": round(elapsed, 1),
                "extra_mib": round((sampler.peak - before) / 2**20),
                "obsm_shape": list(slide.obsm["pred"].shape),
                "layer_written": "pred" in slide.layers,
                "warning": next((str(w.message)[:120] for w in caught), None),
            }
        )
    )


if __name__ == "__main__":
    main()
