"""Single cells on real H&E images with synthetic per-cell truth (so the truth of every nucleus is known).

Nuclei are segmented (``stpredict.pp._cells``); each gets expected expression from its *own* nucleus (size,
haematoxylin, shape), the eosin of the bins under it, and a smooth spatial field no image shows; cells' counts
are Poisson, a spot's counts the sum of its nuclei's (those with their centroid in its disc), targets the
spots' ``log1p`` of normalised counts. Models are trained on the training slides' spots and scored at the
held-out slide's nuclei (Pearson per gene against the nuclei's true ``log1p`` expected expression scaled as
a spot's, mean over genes):

- ``spot2cell`` (defaults: cells averaged in linear units), ``spot2cell_sum`` (the paper's sum pooling, the
  rest default), ``spot2cell_paper`` (``PAPER_PARAMS``), ``spot2cell_no_context`` (no 32/128 µm windows);
- ``istar_cells``: iStar's 8 µm bins, each nucleus the area-weighted mean of the bins under it;
- ``oracle``: every nucleus its nearest spot's *true* value (the best any spot-level prediction can do);
- ``ridge_nearest``: ridge on spot features, each nucleus its nearest spot's prediction;
and at the held-out spots (``level='spot'``) the same models' spot predictions against ridge's.

Usage::

    python benchmarks/bench_cells.py --shared ../shared/data --train C3 C4 C5 --test C6
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from bench_superres import gene_pcc, nearest_spot  # the same scores as the bins' benchmark (run from benchmarks/)
from scipy.ndimage import gaussian_filter

import stpredict as st
from stpredict.io._image import load_slide_image
from stpredict.models._subspot import spot_radius
from stpredict.models.spot2cell import PAPER_PARAMS
from stpredict.pp._cells import CellFeatures, cells_in_discs, iter_tile_cells
from stpredict.pp._dense import BinGrid, DenseFeatures, slide_bin_side
from stpredict.tl._super_resolve import TILE_BINS

N_GENES = 20
SPEC = CellFeatures(DenseFeatures(context_um=()))
SIGNALS = ("nucleus_log_area_um2", "nucleus_haematoxylin_mean", "nucleus_eccentricity", "bins_eosin_mean")
FIELD_UM = 300.0  # scale of the smooth field (µm)
DEPTH = 20.0  # counts per unit rate


class Truth:
    """Per-gene loadings on the nuclei's own signals and on a smooth field (fixed by ``seed``)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.loadings = rng.normal(0, 0.6, size=(len(SIGNALS), N_GENES))
        self.field_weight = rng.normal(0, 0.4, size=N_GENES)
        self.base = rng.uniform(-3.0, -0.5, size=N_GENES)
        self.seed = seed
        self.stats: tuple[np.ndarray, np.ndarray] | None = None

    def rates(self, features: np.ndarray, centres_um: np.ndarray, library_id: str) -> np.ndarray:
        own = features[:, [SPEC.names.index(s) for s in SIGNALS]]
        if self.stats is None:  # standardised with the first (training) slide's nuclei, then fixed
            self.stats = (own.mean(axis=0), own.std(axis=0) + 1e-6)
        z = (own - self.stats[0]) / self.stats[1]
        field = smooth_field(centres_um, zlib.crc32(library_id.encode()) % 2**16 + self.seed)
        return np.exp(self.base + z @ self.loadings + field[:, None] * self.field_weight)


def smooth_field(points_um: np.ndarray, seed: int, step_um: float = 20.0, extent_um: float = 20_000.0) -> np.ndarray:
    """A smooth random field at the points (µm), at the scale ``FIELD_UM``: one fixed grid per slide (``seed``)
    from the image origin, so that spots and nuclei of a slide read the same field."""
    rng = np.random.default_rng(seed)
    side = int(extent_um / step_um)
    noise = gaussian_filter(rng.normal(size=(side, side)), FIELD_UM / step_um)
    noise = (noise - noise.mean()) / (noise.std() + 1e-12)
    cells = np.clip(np.floor(points_um / step_um).astype(int), 0, side - 1)
    return noise[cells[:, 0], cells[:, 1]]


def slide_cells(adata: AnnData, library_id: str, where: np.ndarray) -> list[np.ndarray]:
    """The features of the nuclei of each spot ``where`` of the slide (those with their centroid in its disc)."""
    image, _ = load_slide_image(adata, library_id)
    grid = BinGrid.for_image(slide_bin_side(adata, library_id, SPEC.dense.bin_um), image.shape[1], image.shape[0])
    radius = spot_radius(adata, library_id)
    centres = adata.obsm["spatial"][where]
    return cells_in_discs(image, grid, SPEC, centres, radius)


def synthesise(adata: AnnData, truth: Truth, seed: int) -> AnnData:
    """Spots with synthetic counts: the sums of their nuclei's Poisson counts."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((adata.n_obs, N_GENES), np.float32)
    for library_id in adata.obs["library_id"].unique():
        where = np.flatnonzero(adata.obs["library_id"] == library_id)
        mpp = adata.uns["spatial"][library_id]["scalefactors"]["microns_per_pixel"]
        per_spot = slide_cells(adata, library_id, where)
        sizes = [len(p) for p in per_spot]
        features = np.concatenate(per_spot)
        # a nucleus' position: its spot's centre is enough for a field 300 µm wide
        centres = np.repeat(adata.obsm["spatial"][where], sizes, axis=0) * mpp
        cell_counts = rng.poisson(truth.rates(features, centres, library_id) * DEPTH).astype(np.float32)
        sums = np.add.reduceat(cell_counts, np.r_[0, np.cumsum(sizes)[:-1]], axis=0) if len(cell_counts) else None
        for k, i in enumerate(where):
            counts[i] = sums[k] if sizes[k] else 0.0
    spots = AnnData(counts, obs=adata.obs.copy(), obsm={"spatial": adata.obsm["spatial"]}, uns=dict(adata.uns))
    spots.var_names = [f"G{i}" for i in range(N_GENES)]
    spots.layers["counts"] = spots.X.copy()
    keep = spots.X.sum(axis=1) > 0  # spots where no nucleus was found have no counts: left out
    spots = spots[keep].copy()
    st.pp.normalize(spots)
    return spots


def held_out_truth(test: AnnData, library_id: str, truth: Truth):
    """The held-out slide's nuclei as ``super_resolve(cells=True)`` finds them: centroids and true values.

    A nucleus' true value is spot-equivalent, as the models' are: the normalised ``log1p`` expression a spot made
    only of such nuclei would measure (its expected counts scaled to 10,000 in all).
    """
    image, _ = load_slide_image(test, library_id)
    grid = BinGrid.for_image(slide_bin_side(test, library_id, SPEC.dense.bin_um), image.shape[1], image.shape[0])
    mpp = SPEC.dense.bin_um / grid.side
    rows, cols = (0, grid.n_rows), (0, grid.n_cols)
    features, centroids = [], []
    for found in iter_tile_cells(image, grid, SPEC.dense, rows, cols, mpp, tile=TILE_BINS, outlines=False):
        features.append(found.features())
        centroids.append(found.centroids)
    features, centroids = np.concatenate(features), np.concatenate(centroids)
    rates = truth.rates(features, centroids * mpp, library_id)
    return centroids, np.log1p(1e4 * rates / rates.sum(axis=1, keepdims=True))


def run(args) -> pd.DataFrame:
    adata = st.datasets.her2st(args.train + [args.test], path=args.shared / "her2st")
    truth = Truth(args.seed)
    spots = synthesise(adata, truth, args.seed)
    genes = spots.var_names.tolist()
    train = spots[spots.obs["library_id"] != args.test].copy()
    test = spots[spots.obs["library_id"] == args.test].copy()
    bounds = np.percentile(test.obsm["spatial"], [0, 100], axis=0)
    region = (*(bounds[0] - 60), *(bounds[1] + 60))
    centroids, true_cells = held_out_truth(test, args.test, truth)
    inside = (centroids >= region[:2]).all(axis=1) & (centroids < region[2:]).all(axis=1)
    centroids, true_cells = centroids[inside], true_cells[inside]
    measured = test.layers["log1p"]
    rows = []

    def record(method, level, pcc, seconds, n):
        rows.append({"dataset": "her2st", "test": args.test, "method": method, "level": level, "pcc_m": pcc, "n": n,
                     "time_s": seconds})  # fmt: skip
        print(rows[-1], flush=True)

    def score_cells(name, predictor, started):
        cells = st.tl.super_resolve(predictor, test, cells=True, region=region)
        index, distance = nearest_spot(cells.obsm["spatial"], centroids, with_distance=True)
        same = distance < 0.5  # the same segmentation: the same nuclei
        record(name, "cell", gene_pcc(true_cells[index[same]], cells.X[same]), time.perf_counter() - started,
               int(same.sum()))  # fmt: skip

    diameter_um = 2 * spot_radius(test, args.test) * test.uns["spatial"][args.test]["scalefactors"]["microns_per_pixel"]
    st.pp.image_features(train, size=diameter_um, unit="um")
    st.pp.image_features(test, size=diameter_um, unit="um")
    started = time.perf_counter()
    ridge = st.tl.fit(train, model="ridge", genes=genes)
    ridge_spots = ridge.predict(test, copy=True, key_added="p").obsm["p"].to_numpy()
    record("ridge", "spot", gene_pcc(measured, ridge_spots), time.perf_counter() - started, test.n_obs)
    variants = {
        "spot2cell": ("spot2cell", {}),
        "spot2cell_sum": ("spot2cell", {"pooling": "sum"}),
        "spot2cell_no_context": ("spot2cell", {"context_um": []}),
        "spot2cell_paper": ("spot2cell", dict(PAPER_PARAMS)),
        "istar_cells": ("istar", {}),
    }
    for name, (model, params) in variants.items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        predictor = st.tl.fit(train, model=model, genes=genes, device="cpu", model_params=params)
        fit_s = time.perf_counter() - started
        spot_pred = predictor.predict(test, copy=True, key_added="p").obsm["p"].to_numpy()
        record(name, "spot", gene_pcc(measured, spot_pred), fit_s, test.n_obs)
        score_cells(name, predictor, time.perf_counter())
    near = nearest_spot(centroids, test.obsm["spatial"])
    record("oracle", "cell", gene_pcc(true_cells, measured[near]), 0.0, len(centroids))
    record("ridge_nearest", "cell", gene_pcc(true_cells, ridge_spots[near]), 0.0, len(centroids))
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--train", nargs="+", default=["C3", "C4", "C5"])
    parser.add_argument("--test", default="C6")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="model variants to run (default all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = run(args)
    out = args.out or Path(__file__).parent / "results" / "superres_cells_her2st.csv"
    table.to_csv(out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
