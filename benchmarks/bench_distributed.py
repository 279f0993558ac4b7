"""Slide-parallel feature extraction on a dask.distributed LocalCluster vs serial, on five HER2ST sections.

``st.pp.image_features`` on HER2ST C2-C6 (full sections, images read from disk) serially in this process,
then with ``client=`` a LocalCluster of ``--workers`` single-threaded worker processes (one slide per
task). Checks that the features are identical and reports both wall times (cluster start-up excluded; the
first task on each worker includes importing stpredict there).

Usage::

    python benchmarks/bench_distributed.py --her2st ../shared/data/her2st --workers 2 --method handcrafted
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import stpredict as st


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--her2st", type=Path, default=Path("../shared/data/her2st"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--method", default="handcrafted")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from distributed import Client, LocalCluster

    adata = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=args.her2st)
    started = time.perf_counter()
    serial = st.pp.image_features(adata, method=args.method, show_progress_bar=False, copy=True)
    serial_s = time.perf_counter() - started
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
    with Client(cluster) as client:
        started = time.perf_counter()
        parallel = st.pp.image_features(adata, method=args.method, client=client, copy=True)
        parallel_s = time.perf_counter() - started
    cluster.close()
    key = f"X_{args.method}"
    print(
        json.dumps(
            {
                "method": args.method,
                "slides": 5,
                "spots": adata.n_obs,
                "workers": args.workers,
                "serial_s": round(serial_s, 1),
                "cluster_s": round(parallel_s, 1),
                "speed_up": round(serial_s / parallel_s, 2),
                "identical": bool(np.array_equal(serial.obsm[key], parallel.obsm[key])),
            }
        )
    )


if __name__ == "__main__":
    main()
