"""Whole-slide images: memory and speed of read_wsi + handcrafted features on a 60,000 x 60,000 px pyramid.

Writes a synthetic pyramidal TIFF (mostly glass, four round pieces of textured "tissue", JPEG tiles, written
tile by tile so the image never exists in memory), then, each in a fresh process so that peak memory is its
own: ``st.io.read_wsi`` (overview, tissue detection, virtual spots) and ``st.pp.image_features`` on every
virtual spot, with both backends (OpenSlide and tiffslide). Target: peak resident memory under 1.5 GB.

Usage::

    python benchmarks/bench_wsi.py --side 60000 --out benchmarks/results/wsi.csv
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

MPP = 0.5
TILE = 256


def tissue_pieces(side: int) -> list[tuple[float, float, float]]:
    """Four discs ``(x, y, radius)`` in level-0 pixels: about 8 % of the slide."""
    r = 0.08 * side
    return [
        (0.3 * side, 0.3 * side, r),
        (0.7 * side, 0.3 * side, r),
        (0.3 * side, 0.7 * side, r),
        (0.7 * side, 0.7 * side, r),
    ]


def tiles(side: int, factor: int, rng_seed: int = 0):
    """Tiles of the level ``factor`` times coarser than level 0, row by row (what tifffile writes)."""
    height = width = side // factor
    glass = np.full((TILE, TILE, 3), 236, dtype=np.uint8)
    pieces = [(x / factor, y / factor, r / factor) for x, y, r in tissue_pieces(side)]
    rng = np.random.default_rng(rng_seed)
    texture = rng.integers(0, 60, size=(4 * TILE, 4 * TILE, 1), dtype=np.uint8)
    base = np.array([200, 120, 180], dtype=np.int16)
    for y0 in range(0, height, TILE):
        for x0 in range(0, width, TILE):
            cx, cy = x0 + TILE / 2, y0 + TILE / 2
            near = [p for p in pieces if (cx - p[0]) ** 2 + (cy - p[1]) ** 2 < (p[2] + TILE) ** 2]
            if not near:
                yield glass
                continue
            ys, xs = np.mgrid[y0 : y0 + TILE, x0 : x0 + TILE]
            inside = np.zeros((TILE, TILE), dtype=bool)
            for px, py, r in near:
                inside |= (xs - px) ** 2 + (ys - py) ** 2 < r**2
            oy, ox = (y0 // TILE) % 3 * TILE, (x0 // TILE) % 3 * TILE
            stain = np.clip(base - texture[oy : oy + TILE, ox : ox + TILE], 0, 255).astype(np.uint8)
            yield np.where(inside[..., None], stain, glass)


def write_synthetic(path: Path, side: int, rng_seed: int = 0) -> float:
    import tifffile

    started = time.perf_counter()
    resolution = 1e4 / MPP
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        factor = 1
        while side // factor >= 1024:
            n = side // factor
            tif.write(
                tiles(side, factor, rng_seed),
                shape=(n, n, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 85},
                subsampling=(1, 1),
                subfiletype=0 if factor == 1 else 1,
                resolution=(resolution / factor, resolution / factor),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
            factor *= 2
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(path: str, backend: str) -> dict:
    """read_wsi + handcrafted features in this (fresh) process."""
    import stpredict as st

    started = time.perf_counter()
    adata = st.io.read_wsi(path, backend=backend)
    read_s = time.perf_counter() - started
    after_read = peak_rss_mb()
    started = time.perf_counter()
    st.pp.image_features(adata, show_progress_bar=False)
    features_s = time.perf_counter() - started
    return {
        "backend": backend,
        "n_spots": adata.n_obs,
        "read_wsi_s": read_s,
        "features_s": features_s,
        "features_s_per_1000_spots": 1000 * features_s / adata.n_obs,
        "peak_rss_mb_after_read": after_read,
        "peak_rss_mb": peak_rss_mb(),
        "finite": bool(np.isfinite(adata.obsm["X_handcrafted"]).all()),
    }


def read_speed(path: str, backend: str, n: int = 300) -> float:
    """Milliseconds per random 224 px level-0 region read."""
    from stpredict.io import WholeSlide

    rng = np.random.default_rng(0)
    with WholeSlide(path, backend=backend) as slide:
        side = slide.shape[0]
        xy = rng.integers(0, side - 224, size=(n, 2))
        started = time.perf_counter()
        for x, y in xy:
            slide.read(int(x), int(y), 224, 224)
        return 1000 * (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=60000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/stpredict-bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/wsi.csv"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"synthetic_{args.side}.tif"
    if not path.exists():
        seconds = write_synthetic(path, args.side)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB on disk) in {seconds:.0f} s", flush=True)
    rows = []
    for backend in ("openslide", "tiffslide"):
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            row = pool.submit(run, str(path), backend).result()
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            row["ms_per_224px_read"] = pool.submit(read_speed, str(path), backend).result()
        row.update(side=args.side, file_mb=path.stat().st_size / 1e6)
        print(row, flush=True)
        rows.append(row)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.round(2).to_string(index=False))


if __name__ == "__main__":
    main()
