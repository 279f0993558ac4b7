"""Smoothing at Visium HD scale: 8n, SPCS, adaptive median and EAGS through ``st.pp.smooth``, 4k to 1M spots.

Two inputs of 250 genes on a Visium-like hex grid (doubled-column indexing):

- ``real``: log1p profiles of the 250 most expressed genes of HER2ST C2-C6 (~3,000 spots), dealt onto the grid
  in order and repeated, plus Gaussian noise of sd 0.01 so that repeated profiles are not exact ties;
- ``gauss``: structureless Gaussian data with the mean and covariance of the same profiles.

Each case runs in a fresh subprocess: "extra memory" is the peak resident memory (``VmHWM``) minus the
resident memory just before ``st.pp.smooth`` (input AnnData with a float32 layer already built); the written
layer is part of it. For SPCS and EAGS the script also reports which neighbour search the automatic choice
made (``uns['stpredict_smooth'][key]['neighbour_search']``) and, when it is the approximate one, its recall@k
and distance ratio against an exact brute-force search on 500 sampled spots. ``--old-src`` runs the same cases with another checkout's ``src`` (the implementation before this
one) to report the speed-up.

Usage::

    python benchmarks/bench_smoothing.py --her2st ../shared/data/her2st --sizes 4096 102400 1048576 \\
        --old-src /path/to/previous/checkout/src --old-sizes 102400
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

METHODS = ("8n", "spcs", "adaptive_median", "eags")
PROFILES = Path("benchmarks/results/her2st_profiles.npy")


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


def values(kind: str, n_spots: int, profiles: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.empty((n_spots, profiles.shape[1]), dtype=np.float32)
    chol = np.linalg.cholesky(np.cov(profiles.T) + 1e-6 * np.eye(profiles.shape[1])) if kind == "gauss" else None
    for start in range(0, n_spots, 65536):  # in blocks: never a float64 copy of a million spots
        rows = np.arange(start, min(n_spots, start + 65536))
        if kind == "real":
            out[rows] = profiles[rows % len(profiles)] + rng.normal(scale=0.01, size=(len(rows), profiles.shape[1]))
        else:
            out[rows] = profiles.mean(axis=0) + rng.standard_normal((len(rows), profiles.shape[1])) @ chol.T
    return out


def slide(kind: str, n_spots: int):
    import anndata as ad
    import pandas as pd

    rows, cols = hex_grid(n_spots)
    obs = pd.DataFrame(
        {"library_id": pd.Categorical(["hd"] * n_spots), "array_row": rows, "array_col": cols},
        index=pd.RangeIndex(n_spots).astype(str),
    )
    adata = ad.AnnData(obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(250)]))
    adata.layers["log1p"] = values(kind, n_spots, np.load(PROFILES))
    adata.obsm["spatial"] = np.column_stack([cols * 50.0, rows * 86.6])
    adata.uns["spatial"] = {"hd": {"metadata": {"grid": "hex"}, "scalefactors": {}}}
    return adata


def search_report(adata, method: str) -> dict:
    """The neighbour search ``st.pp.smooth`` used, and for an approximate one its recall@k and distance ratio.

    The approximate graph is rebuilt with the same algorithm and seed; on 500 sampled spots it is compared
    with exact search: recall@k, and the mean distance to the neighbours found over the mean distance to the
    true ones (1.00: as close as the exact neighbours, whichever spots they are).
    """
    from stpredict.pp._neighbours import nearest_neighbours
    from stpredict.pp._spcs import pattern_space, unit_centred

    search = next(iter(adata.uns["stpredict_smooth"][f"log1p_{method}"]["neighbour_search"].values()))
    report = {"search": search}
    if search != "pynndescent":
        return report
    x = adata.layers["log1p"]
    if method == "spcs":
        space, k = unit_centred(pattern_space(x, 10)), 16
    else:
        space, k = pattern_space(x, 50, scale=x.std(axis=0, dtype=np.float64)), 10
    found = nearest_neighbours(space, k, exact=False)
    sample = np.random.default_rng(1).choice(len(space), 500, replace=False)
    d = np.stack([((space - space[i]) ** 2).sum(1) for i in sample])
    d[np.arange(500), sample] = np.inf
    truth = np.argsort(d, axis=1)[:, :k]
    hits = [len(set(a) & set(b)) / k for a, b in zip(found.index[sample], truth, strict=True)]
    true_distance = np.sqrt(np.take_along_axis(d, truth, axis=1)).mean(axis=1)
    report["recall"] = float(np.mean(hits))
    report["distance_ratio"] = float(np.mean(found.distance[sample].mean(axis=1) / true_distance))
    return report


def run_case(method: str, n_spots: int, kind: str) -> dict:
    import warnings

    import stpredict as st

    warnings.simplefilter("ignore")
    small = slide(kind, 2000)
    st.pp.smooth(small, method=method, show_progress_bar=False)  # JIT warm-up (numba caches on disk)
    adata = slide(kind, n_spots)
    before = rss_mb("VmRSS")
    started = time.perf_counter()
    st.pp.smooth(adata, method=method, show_progress_bar=False)
    elapsed = time.perf_counter() - started
    result = {
        "method": method,
        "data": kind,
        "n_spots": n_spots,
        "seconds": round(elapsed, 2),
        "extra_memory_mb": round(rss_mb("VmHWM") - before),
        "checksum": float(np.nansum(adata.layers[f"log1p_{method}"], dtype=np.float64)),
    }
    if method in ("spcs", "eags") and os.environ.get("STPREDICT_BENCH_SEARCH") == "1":
        result.update(search_report(adata, method))
    return result


def markdown_tables(results: list[dict], sizes: list[int], old_size: int) -> str:
    """The results as the two tables of docs/benchmarks.md (one per input)."""

    def cell(r: dict | None) -> str:
        if r is None:
            return "—"
        if r.get("seconds") is None:
            return r.get("note", "failed")
        text = f"{r['seconds']:.2f} s" if r["seconds"] < 10 else f"{r['seconds']:.0f} s"
        text += f", {r['extra_memory_mb']:,} MB"
        if r.get("search"):
            text += f", {r['search']}"
        if r.get("recall") is not None:
            ratio = f", distance ratio {r['distance_ratio']:.3f}" if "distance_ratio" in r else ""
            text += f" (recall {r['recall']:.2f}{ratio})"
        return text

    found = {(r["method"], r["data"], r["n_spots"], r["impl"]): r for r in results}
    lines = []
    for kind, title in (("real", "Real profiles"), ("gauss", "Structureless Gaussian")):
        lines += [f"**{title}** (250 genes):", ""]
        header = [f"{n:,} spots" for n in sizes] + [f"before, {old_size:,} spots", f"speed-up at {old_size:,}"]
        lines += ["| method | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
        for method in METHODS:
            row = [cell(found.get((method, kind, n, "new"))) for n in sizes]
            new, old = found.get((method, kind, old_size, "new")), found.get((method, kind, old_size, "old"))
            row.append(cell(old))
            if new and old and new.get("seconds") and old.get("seconds"):
                delta = abs(new["checksum"] - old["checksum"]) / abs(old["checksum"])
                row.append(f"{old['seconds'] / new['seconds']:.1f}× (checksum Δ {delta:.0e})")
            else:
                row.append("—")
            lines.append(f"| {method} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--her2st", type=Path, default=Path("../shared/data/her2st"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 102400, 1048576])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--data", nargs="+", default=["real", "gauss"])
    parser.add_argument("--old-src", help="PYTHONPATH of the previous implementation's src/")
    parser.add_argument("--old-sizes", type=int, nargs="*", default=[102400])
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/smoothing.json"))
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--tables", action="store_true", help="print the markdown tables of --out and stop")
    args = parser.parse_args()
    if args.tables:
        print(markdown_tables(json.loads(args.out.read_text()), args.sizes, args.old_sizes[0]))
        return
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.case[2])))
        return
    if not PROFILES.exists():
        PROFILES.parent.mkdir(parents=True, exist_ok=True)
        np.save(PROFILES, real_profiles(args.her2st))
    plan = [(m, n, d, "new") for d in args.data for n in args.sizes for m in args.methods]
    if args.old_src:
        plan += [(m, n, d, "old") for d in args.data for n in args.old_sizes for m in args.methods]
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    for method, n, kind, impl in plan:
        env = dict(os.environ, STPREDICT_BENCH_SEARCH="1" if impl == "new" else "0")
        if impl == "old":
            env["PYTHONPATH"] = args.old_src
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--case", method, str(n), kind],
                capture_output=True, text=True, env=env, timeout=args.timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            result = {"method": method, "data": kind, "n_spots": n, "seconds": None, "note": f"> {args.timeout} s"}
        else:
            if done.returncode:
                tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                result = {"method": method, "data": kind, "n_spots": n, "seconds": None, "note": tail[0][:200]}
            else:
                result = json.loads(done.stdout.strip().splitlines()[-1])
        result["impl"] = impl
        results = [r for r in results if (r["method"], r["data"], r["n_spots"], r["impl"]) != (method, kind, n, impl)]
        results.append(result)
        args.out.write_text(json.dumps(results, indent=2))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
