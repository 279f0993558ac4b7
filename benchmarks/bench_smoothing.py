"""SPCS speed and memory: the numba implementation vs a dense numpy implementation on the same input.

Input: a Visium-like hex grid (doubled-column indexing) whose spots carry real HER2ST expression
(log1p of the 250 most expressed genes of sections C2-C6, spots dealt onto the grid in order, so the
expression patterns are real and the grid is the size of a Visium or Visium HD slide).

Each measurement runs in a fresh subprocess, so peak memory (VmHWM) is that of one call: "extra memory"
is the peak resident memory minus the resident memory just before the call (input already built).

Usage::

    python benchmarks/bench_smoothing.py --her2st ../shared/data/her2st --sizes 4096 102400
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def real_profiles(her2st: Path, n_genes: int = 250) -> np.ndarray:
    import stpredict as st

    adata = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=her2st)
    st.pp.normalize(adata)
    st.pp.select_genes(adata, n_genes=n_genes)
    return np.asarray(adata[:, adata.uns["selected"]["genes"]].layers["log1p"], dtype=np.float64)


def hex_grid(n_spots: int) -> tuple[np.ndarray, np.ndarray]:
    side = int(np.ceil(np.sqrt(n_spots)))
    rows = np.repeat(np.arange(side), side)
    cols = np.tile(np.arange(side), side) * 2 + rows % 2  # Visium's doubled columns
    return rows[:n_spots], cols[:n_spots]


def spcs_dense_numpy(x, rows, cols, scores, tau_p=16, tau_s=2, alpha=0.6, beta=0.4, hexagonal=True):
    """SPCS with dense n x n matrices, vectorised numpy (what one writes without a kernel)."""
    n = len(x)
    r = np.corrcoef(scores)
    d = 1.0 - r
    kernel = np.where(d <= 1, np.exp(-4.5 * d**2), 0.0)
    np.fill_diagonal(kernel, 0.0)
    top = np.argsort(-kernel, axis=1, kind="stable")[:, :tau_p]
    pattern = np.zeros((n, n))
    np.put_along_axis(pattern, top, np.take_along_axis(kernel, top, axis=1), axis=1)
    pattern /= np.maximum(pattern.sum(axis=1, keepdims=True), 1e-300)
    manhattan = np.abs(rows[:, None] - rows[None, :]) + np.abs(cols[:, None] - cols[None, :])
    limit = tau_s * (2 if hexagonal else 1)
    spatial = np.where((manhattan > 0) & (manhattan <= limit), 1.0 / np.maximum(manhattan, 1), 0.0)
    spatial /= np.maximum(spatial.sum(axis=1, keepdims=True), 1e-300)
    return (1 - alpha) * x + alpha * (beta * spatial @ x + (1 - beta) * pattern @ x)


def run_case(impl: str, n_spots: int, profiles_path: str) -> dict:
    from stpredict.pp._spcs import pattern_space, spcs

    profiles = np.load(profiles_path)
    rows, cols = hex_grid(n_spots)
    x = np.ascontiguousarray(profiles[np.arange(n_spots) % len(profiles)])
    if impl == "numba":
        spcs(x[:300], rows[:300], cols[:300], "hex")  # JIT warm-up (compiled code is cached on disk)
    before = rss_mb("VmRSS")
    start = time.perf_counter()
    if impl == "numba":
        out = spcs(x, rows, cols, "hex")
    else:
        out = spcs_dense_numpy(x, rows, cols, pattern_space(x))
    elapsed = time.perf_counter() - start
    return {
        "impl": impl,
        "n_spots": n_spots,
        "n_genes": x.shape[1],
        "seconds": elapsed,
        "extra_memory_mb": rss_mb("VmHWM") - before,
        "checksum": float(out.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--her2st", type=Path, default=Path("../shared/data/her2st"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 102400])
    parser.add_argument("--dense-max", type=int, default=8192, help="largest size run with the dense version")
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.case[2])))
        return
    profiles_path = Path("benchmarks/results/her2st_profiles.npy")
    profiles_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(profiles_path, real_profiles(args.her2st))
    results = []
    for n in args.sizes:
        for impl in ("numba", "dense"):
            if impl == "dense" and n > args.dense_max:
                print(f"dense numpy at {n} spots skipped: its n x n matrices need {8 * n * n * 6 / 1e9:.0f} GB")
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--case", impl, str(n), str(profiles_path)],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            print(
                f"{impl:6s} {n:7d} spots x {result['n_genes']} genes: {result['seconds']:8.2f} s, "
                f"{result['extra_memory_mb']:8.0f} MB extra"
            )
    by = {(r["impl"], r["n_spots"]): r for r in results}
    for n in args.sizes:
        if ("dense", n) in by:
            same = np.isclose(by[("dense", n)]["checksum"], by[("numba", n)]["checksum"], rtol=1e-9)
            print(
                f"{n} spots: numba is {by[('dense', n)]['seconds'] / by[('numba', n)]['seconds']:.1f}x faster "
                f"than dense numpy; same result: {same}"
            )
    Path("benchmarks/results/smoothing.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
