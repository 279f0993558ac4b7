"""Super-resolution on real H&E images with synthetic per-bin truth (so the truth at every bin is known).

Each bin of a slide's grid gets expected expression from its *own* pixels (nuclear fraction, eosin, texture,
read at 16 px per bin: the models read 8 px per bin and context) plus a smooth spatial field no image shows;
bins' counts are Poisson; a spot's counts are the sum of the bins inside its disc; targets are the spots'
``log1p`` of normalised counts. Models are trained on the training slides' spots and scored at the held-out
slide's bins (Pearson per gene against the bins' true ``log1p`` expected expression, mean over genes):

- ``istar`` (defaults), ``istar_paper`` (the paper's output floor and loss, no linear start), ``istar_no_context``;
- ``istar_anchored``: istar's bins scaled so that each spot's bins average to ridge's spot prediction;
- ``oracle``: every bin gets its nearest spot's *true* value (the best any spot-level prediction can do);
- ``ridge_nearest``: ridge on spot features, each bin its nearest spot's prediction (interpolation);
- ``ridge_bin_patch``: the same ridge applied to bin-sized patches (the spot model at the bin);
and at the held-out spots (``level='spot'``): istar's spots (the mean of its bins) against ridge's.

Usage::

    python benchmarks/bench_superres.py --shared ../shared/data --dataset her2st --train C2 C3 C4 C5 --test C6
    python benchmarks/bench_superres.py --shared ../shared/data --dataset mob --train MOB1 MOB2 --test MOB3 --bin-um 40
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.ndimage import gaussian_filter

import stpredict as st
from stpredict.io._image import load_slide_image
from stpredict.models._subspot import spot_radius
from stpredict.pp._dense import BinGrid, DenseFeatures, features_at, slide_bin_side

N_GENES = 20
SIGNALS = ("nuclear_mean", "eosin_mean", "gradient_std")


def load(dataset: str, shared: Path, sections: list[str]) -> AnnData:
    if dataset == "her2st":
        return st.datasets.her2st(sections, path=shared / "her2st")
    adata = st.datasets.mob(path=shared / "mob")
    return adata[adata.obs["library_id"].isin(sections)].copy()


class Truth:
    """Per-gene loadings on the bins' own signals and on a smooth field (fixed by ``seed``)."""

    def __init__(self, bin_um: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.loadings = rng.normal(0, 0.7, size=(len(SIGNALS), N_GENES))
        self.field_weight = rng.normal(0, 0.4, size=N_GENES)
        self.base = rng.uniform(-3.0, -0.5, size=N_GENES)
        self.spec = DenseFeatures(bin_um=bin_um, px_per_bin=16, context_um=())
        self.seed = seed
        self.stats: tuple[np.ndarray, np.ndarray] | None = None

    def slide_rates(self, adata: AnnData, library_id: str, bins: np.ndarray, grid: BinGrid, image) -> np.ndarray:
        own = features_at(image, grid, self.spec, bins)[:, [self.spec.names.index(s) for s in SIGNALS]]
        if self.stats is None:  # standardised with the first (training) slide's bins, then fixed
            self.stats = (own.mean(axis=0), own.std(axis=0) + 1e-6)
        z = (own - self.stats[0]) / self.stats[1]
        field = smooth_field(grid, bins, zlib.crc32(library_id.encode()) % 2**16 + self.seed, 300.0 / self.spec.bin_um)
        return np.exp(self.base + z @ self.loadings + field[:, None] * self.field_weight)


def smooth_field(grid: BinGrid, bins: np.ndarray, seed: int, scale_bins: float) -> np.ndarray:
    """A smooth random field (standardised) over the grid, at the given scale in bins."""
    rng = np.random.default_rng(seed)
    lo, hi = bins.min(axis=0), bins.max(axis=0) + 1
    noise = gaussian_filter(rng.normal(size=tuple(hi - lo)), scale_bins)
    noise = (noise - noise.mean()) / (noise.std() + 1e-12)
    return noise[bins[:, 0] - lo[0], bins[:, 1] - lo[1]]


def synthesise(adata: AnnData, truth: Truth, bin_um: float, seed: int):
    """Spots with synthetic counts (sums of their bins' Poisson counts), and per slide its eval bins' truth."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((adata.n_obs, N_GENES), np.float32)
    eval_bins = {}
    for library_id in adata.obs["library_id"].unique():
        where = np.flatnonzero(adata.obs["library_id"] == library_id)
        image, _ = load_slide_image(adata, library_id)
        grid = BinGrid.for_image(slide_bin_side(adata, library_id, bin_um), image.shape[1], image.shape[0])
        discs = grid.bins_in_discs(adata.obsm["spatial"][where], spot_radius(adata, library_id))
        members = np.concatenate(discs)
        spots_lo = members.min(axis=0)
        spots_hi = members.max(axis=0) + 1
        rows, cols = np.meshgrid(
            np.arange(spots_lo[0], spots_hi[0]), np.arange(spots_lo[1], spots_hi[1]), indexing="ij"
        )
        box = np.column_stack([rows.ravel(), cols.ravel()])
        rates = truth.slide_rates(adata, library_id, box, grid, image)
        index = pd.Series(np.arange(len(box)), index=pd.MultiIndex.from_arrays(box.T))
        bin_counts = rng.poisson(rates * 20).astype(np.float32)
        for i, disc in zip(where, discs, strict=True):
            counts[i] = bin_counts[index.loc[list(map(tuple, disc))].to_numpy()].sum(axis=0)
        eval_bins[library_id] = (box, np.log1p(rates * 20), grid)
    spots = AnnData(counts, obs=adata.obs.copy(), obsm={"spatial": adata.obsm["spatial"]}, uns=dict(adata.uns))
    spots.var_names = [f"G{i}" for i in range(N_GENES)]
    spots.layers["counts"] = spots.X.copy()
    st.pp.normalize(spots)
    return spots, eval_bins


def gene_pcc(truth: np.ndarray, pred: np.ndarray) -> float:
    t, p = truth - truth.mean(axis=0), pred - pred.mean(axis=0)
    r = (t * p).sum(axis=0) / np.sqrt((t**2).sum(axis=0) * (p**2).sum(axis=0) + 1e-12)
    return float(np.nanmean(r))


def nearest_spot(points: np.ndarray, spots: np.ndarray, *, with_distance: bool = False):
    """The index of each point's nearest spot (and the distance, ``with_distance``)."""
    from scipy.spatial import cKDTree

    distance, index = cKDTree(spots).query(points)
    return (index, distance) if with_distance else index


def run(args) -> pd.DataFrame:
    adata = load(args.dataset, args.shared, args.train + [args.test])
    truth = Truth(args.bin_um, args.seed)
    spots, eval_bins = synthesise(adata, truth, args.bin_um, args.seed)
    genes = spots.var_names.tolist()
    train = spots[spots.obs["library_id"] != args.test].copy()
    test = spots[spots.obs["library_id"] == args.test].copy()
    box, true_bins, grid = eval_bins[args.test]
    measured = test.layers["log1p"]
    rows = []

    def record(method, level, pcc, seconds, n):
        rows.append({"dataset": args.dataset, "test": args.test, "bin_um": args.bin_um, "method": method,
                     "level": level, "pcc_m": pcc, "n": n, "time_s": seconds})  # fmt: skip
        print(rows[-1], flush=True)

    # the spot model reads each spot's disc (100 µm on both data sets), as istar's bags do
    diameter_um = 2 * spot_radius(test, args.test) * test.uns["spatial"][args.test]["scalefactors"]["microns_per_pixel"]
    st.pp.image_features(train, size=diameter_um, unit="um")
    st.pp.image_features(test, size=diameter_um, unit="um")
    started = time.perf_counter()
    ridge = st.tl.fit(train, model="ridge", genes=genes)
    ridge_spots = ridge.predict(test, copy=True, key_added="p").obsm["p"].to_numpy()
    record("ridge", "spot", gene_pcc(measured, ridge_spots), time.perf_counter() - started, test.n_obs)
    # context windows at least 4 and 16 bins wide (the defaults, 32 and 128 µm, at 8 µm bins)
    context = {"context_um": [max(32.0, 4 * args.bin_um), max(128.0, 16 * args.bin_um)]}
    variants = {
        "istar": context,
        "istar_paper": {**context, "linear_start": False, "output_floor": "spot_min", "loss_space": "linear"},
        "istar_no_context": {"context_um": []},
    }
    region = None
    scored = None
    anchored = None
    lookup = pd.Series(np.arange(len(box)), index=pd.MultiIndex.from_arrays(box.T))
    for name, params in variants.items():
        started = time.perf_counter()
        predictor = st.tl.fit(
            train, model="istar", genes=genes, device="cpu", model_params={**params, "bin_um": args.bin_um}
        )
        fit_s = time.perf_counter() - started
        record(name, "spot", gene_pcc(measured, predictor.predict(test, copy=True, key_added="p").obsm["p"].to_numpy()),
               fit_s, test.n_obs)  # fmt: skip
        started = time.perf_counter()
        side = grid.side
        region = (
            box[:, 1].min() * side,
            box[:, 0].min() * side,
            (box[:, 1].max() + 1) * side,
            (box[:, 0].max() + 1) * side,
        )
        bins = st.tl.super_resolve(predictor, test, region=region)
        keys = list(zip(bins.obs["array_row"], bins.obs["array_col"], strict=True))
        found = lookup.reindex(keys).to_numpy()
        ok = ~np.isnan(found)
        scored = (found[ok].astype(int), bins.obsm["spatial"][ok])
        record(name, "bin", gene_pcc(true_bins[scored[0]], bins.X[ok]), time.perf_counter() - started, int(ok.sum()))
        if name == "istar":  # the same bins, anchored on ridge's spot predictions
            anchored = st.tl.super_resolve(predictor, test, region=region, anchor=ridge)
            found_a = lookup.reindex(list(zip(anchored.obs["array_row"], anchored.obs["array_col"], strict=True)))
            ok_a = ~np.isnan(found_a.to_numpy())
            record("istar_anchored", "bin", gene_pcc(true_bins[found_a.to_numpy()[ok_a].astype(int)], anchored.X[ok_a]),
                   0.0, int(ok_a.sum()))  # fmt: skip
            record("istar_anchored", "spot", gene_pcc(measured, ridge_spots), 0.0, test.n_obs)
    index, centres = scored
    near = nearest_spot(centres, test.obsm["spatial"])
    record("oracle", "bin", gene_pcc(true_bins[index], measured[near]), 0.0, len(index))
    record("ridge_nearest", "bin", gene_pcc(true_bins[index], ridge_spots[near]), 0.0, len(index))
    sample = np.random.default_rng(0).choice(len(index), size=min(len(index), args.patch_sample), replace=False)
    started = time.perf_counter()
    image, _ = load_slide_image(test, args.test)
    from stpredict.pp._patches import cut_patches

    patches = cut_patches(image, centres[sample], max(4, int(round(grid.side))))
    features = st.pp.handcrafted_features(patches).astype(np.float64)
    bin_pred = ridge.model.predict(st.models.ModelInputs(features, centres[sample], np.array([args.test] * len(sample), object),
                                                         np.array([None] * len(sample), object)))  # fmt: skip
    record(
        "ridge_bin_patch",
        "bin",
        gene_pcc(true_bins[index[sample]], bin_pred),
        time.perf_counter() - started,
        len(sample),
    )
    return pd.DataFrame(rows)


def run_visium_hd(args) -> pd.DataFrame:
    """The synthetic Visium HD example's layout on two areas of the bundled C4 crop: train on run A's pseudo-spots
    (55 µm, 100 µm apart, the sums of its 8 µm bins), score at run B's measured 8 µm bins (genes DARK and PALE
    follow the darkness of the tissue under each bin; the others are flat)."""
    import tempfile

    from stpredict.datasets._visium_hd_example import write_visium_hd

    root = Path(tempfile.mkdtemp())
    runs = {}
    for name, (top, left, extent) in {"a": (50.0, 50.0, 800), "b": (850.0, 900.0, 720)}.items():
        outs = write_visium_hd(root / name, top_um=top, left_um=left, extent_um=extent, seed=len(runs))
        bins = st.io.read_visium_hd(outs, bin_size=8, source_image_path=root / name / "image.tif", library_id=name)
        bins.layers["counts"] = bins.X.copy()
        runs[name] = bins
    spots = st.pp.pseudo_spots(runs["a"], diameter_um=55, pitch_um=100)
    spots.layers["counts"] = spots.X.copy()
    st.pp.normalize(spots)
    test_bins = runs["b"]
    test_bins.X = test_bins.layers["counts"].copy()
    st.pp.normalize(test_bins)
    genes = ["DARK", "PALE"]
    truth = np.asarray(
        test_bins[:, genes].layers["log1p"].todense()
        if hasattr(test_bins.layers["log1p"], "todense")
        else test_bins[:, genes].layers["log1p"]
    )
    test_spots = st.pp.pseudo_spots(test_bins, diameter_um=55, pitch_um=100)
    test_spots.layers["counts"] = test_spots.X.copy()
    st.pp.normalize(test_spots)
    rows = []

    def record(method, level, pcc, seconds, n):
        rows.append({"dataset": "visium_hd_example", "test": "b", "bin_um": 8.0, "method": method, "level": level,
                     "pcc_m": pcc, "n": n, "time_s": seconds})  # fmt: skip
        print(rows[-1], flush=True)

    diameter_um = 55.0
    st.pp.image_features(spots, size=diameter_um, unit="um")
    st.pp.image_features(test_spots, size=diameter_um, unit="um")
    ridge = st.tl.fit(spots, model="ridge", genes=genes)
    ridge_spots = ridge.predict(test_spots, copy=True, key_added="p").obsm["p"].to_numpy()
    record("ridge", "spot", gene_pcc(test_spots[:, genes].layers["log1p"], ridge_spots), 0.0, test_spots.n_obs)
    centres = test_bins.obsm["spatial"]
    for name, params in {"istar": {}, "istar_paper": {"linear_start": False, "output_floor": "spot_min", "loss_space": "linear"},
                         "istar_no_context": {"context_um": []}}.items():  # fmt: skip
        started = time.perf_counter()
        predictor = st.tl.fit(spots, model="istar", genes=genes, device="cpu", model_params=params)
        predicted_spots = predictor.predict(test_spots, copy=True, key_added="p").obsm["p"].to_numpy()
        record(name, "spot", gene_pcc(test_spots[:, genes].layers["log1p"], predicted_spots),
               time.perf_counter() - started, test_spots.n_obs)  # fmt: skip
        (x0, y0), (x1, y1) = centres.min(axis=0), centres.max(axis=0)
        out = st.tl.super_resolve(predictor, test_bins, region=(x0 - 1, y0 - 1, x1 + 1, y1 + 1), min_tissue=0.0)
        # the output grid is anchored at the image origin, the Visium HD bins at the run's corner: match by centre
        near = nearest_spot(out.obsm["spatial"], centres)
        close = np.hypot(*(out.obsm["spatial"] - centres[near]).T) < 0.25 * out.uns["super_resolution"]["bin_px"]
        record(name, "bin", gene_pcc(truth[near[close]], out.X[close]), 0.0, int(close.sum()))
        if name == "istar":  # anchored on ridge's predictions for run B's pseudo-spots, on run B's bin grid
            corner = centres[0] - out.uns["super_resolution"]["bin_px"] / 2
            out = st.tl.super_resolve(predictor, test_spots, region=(x0 - 1, y0 - 1, x1 + 1, y1 + 1), min_tissue=0.0,
                                      anchor=ridge, origin=corner)  # fmt: skip
            near = nearest_spot(out.obsm["spatial"], centres)
            close = np.hypot(*(out.obsm["spatial"] - centres[near]).T) < 0.25 * out.uns["super_resolution"]["bin_px"]
            record("istar_anchored", "bin", gene_pcc(truth[near[close]], out.X[close]), 0.0, int(close.sum()))
            record("istar_anchored", "spot", gene_pcc(test_spots[:, genes].layers["log1p"], ridge_spots), 0.0,
                   test_spots.n_obs)  # fmt: skip
    near = nearest_spot(centres, test_spots.obsm["spatial"])
    record("oracle", "bin", gene_pcc(truth, test_spots[:, genes].layers["log1p"][near]), 0.0, len(centres))
    record("ridge_nearest", "bin", gene_pcc(truth, ridge_spots[near]), 0.0, len(centres))
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dataset", choices=("her2st", "mob", "visium_hd_example"), default="her2st")
    parser.add_argument("--train", nargs="+", default=["C2", "C3", "C4", "C5"])
    parser.add_argument("--test", default="C6")
    parser.add_argument("--bin-um", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch-sample", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = run_visium_hd(args) if args.dataset == "visium_hd_example" else run(args)
    out = args.out or Path(__file__).parent / "results" / f"superres_{args.dataset}.csv"
    table.to_csv(out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
