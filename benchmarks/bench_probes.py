"""Architecture probes: can each model learn what its design is for?

Real images and spot layouts (HER2ST patient C, C2-C6; mouse olfactory bulb MOB1-4), **synthetic targets**
computed from each spot's image features (44 handcrafted colour/texture features, standardised over all
spots), so that what a target depends on is known exactly:

- ``own_linear``: a random linear function of the spot's own features;
- ``own_nonlinear``: products and a cosine of random projections of the spot's own features, minus their
  least-squares linear fit on those features (nothing left for a linear model);
- ``ring1`` / ``ring2``: the mean of a linear signal over the spots within 1 / 2 grid steps, **the spot
  itself excluded** (neighbourhood only);
- ``region``: the mean of a linear signal over the spot's tissue region (k-means of spot positions, about
  40 spots per region, slide by slide);
- ``slide_context``: a linear signal plus a second one whose sign and weight are set by the slide's mean
  features (the same spot means different things on different slides);
- ``mixed``: half own linear, half ``ring2`` (variance shares).

Every signal is standardised to variance 1 and gets independent Gaussian noise of variance ``noise``
(0.25): the best possible Pearson is ``1 / sqrt(1 + noise)`` = 0.894 (the **ceiling**). Each family has
``--draws`` independent draws (new weights and noise); all families and draws are columns of one target
matrix, fitted jointly by every model (as real genes are). Scores: Pearson per held-out slide and target,
averaged over slides and draws, per family (PCC(M) of the family).

Splits: HER2ST train C2-C5, test C6; MOB train individual 1 (MOB1, MOB2), test individual 2 (MOB3, MOB4).
Models validate and stop early on held-out *training* slides, as always; the synthetic targets carry no
information about any real test section, and no default is chosen on these probes' test slides.

Usage::

    python benchmarks/bench_probes.py --shared ../shared/data            # every model, 3 draws
    python benchmarks/bench_probes.py --shared ../shared/data --quick    # one draw
    python benchmarks/bench_probes.py --models ridge merge merge_1hop --datasets her2st
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from sklearn.cluster import KMeans

import stpredict as st
from stpredict._metrics import per_slide_pearson
from stpredict.models import get_model
from stpredict.pp._grid import grid_neighbours, infer_grid

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import VARIANTS  # noqa: E402  (the same named variants on both benchmarks)

FAMILIES = ("own_linear", "own_nonlinear", "ring1", "ring2", "region", "slide_context", "mixed")
DATASETS = {
    # name: (loader, training slides, test slides, patch size, unit)
    "her2st": (
        lambda d: st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=d / "her2st"),
        ["C2", "C3", "C4", "C5"],
        ["C6"],
        224,
        "px",
    ),
    "mob": (lambda d: st.datasets.mob(path=d / "mob"), ["MOB1", "MOB2"], ["MOB3", "MOB4"], 200, "um"),
}
# every seed model with its defaults, the paper ablations that bear on a probe (spatial context, views,
# cross-slide relations, the ranking loss, the GO gene graph), the graph models with their linear path, and
# the baselines; any other MODEL_ABLATION name runs by --models
DEFAULT_MODELS = [
    "ridge",
    "ridge_spatial",
    "mlp",
    "merge",
    "merge_1hop",
    "merge_linear",
    "sepal",
    "sepal_stage1",
    "triplex",
    "triplex_no_neighbour",
    "triplex_no_global",
    "spahgc",
    "spahgc_no_cnda",
    "spahgc_no_cnap",
    "spahgc_linear",
    "m2tglgo",
    "m2tglgo_no_ranking",
    "m2tglgo_no_go",
    "m2tglgo_linear",
]
SPOTS_PER_REGION = 40
# human gene symbols with Gene Ontology annotations name the probe targets, so that M2TGLGO builds its GO
# gene graph as it would for real genes (the graph then joins targets that share no signal by design)
PROBE_GENES = (
    "ERBB2 GNAS FASN ACTB GAPDH MYL6 TMSB4X EEF1A1 FTL FTH1 CD74 HLA-DRA COL1A1 COL1A2 COL3A1 SPARC MGP KRT8 "
    "KRT18 KRT19 XBP1 SCD CD24 AZGP1 TFF1 TFF3 PIP MUC1 S100A6 VIM LUM DCN IGKC IGHG3 JCHAIN MZB1 TPT1 EEF2 "
    "CST3 APOE B2M RPLP0 RPS3 MALAT1 SERF2 PFN1 CFL1 UBC HSPB1 S100A10 LGALS1 IFI27 SAA1 CLDN4 CRIP1 CALML5 "
    "AGR2 PERP SPINT2 CTSD CD63 PSAP TIMP1 IGFBP5 POSTN BGN FN1 AEBP1 MMP11 CTHRC1"
).split()


def variants() -> dict[str, tuple[str, dict]]:
    """``{name: (model, model_params)}``: the real-slide benchmark's named variants, and ``ridge_spatial_knnK``.

    Those of ``bench_models.py``: every model's paper ablations (``MODEL_ABLATION``), ``MODEL_linear`` (a graph
    model with its linear path, ``linear_path=True``, not in the papers), ``MODEL_grid`` (the array's grid ring
    instead of its paper's kNN graph, ``spot_graph='grid'``) and the rest; ``ridge_spatial_knnK`` is ridge on
    each graph model's paper kNN graph (SpaHGC 5, M2TGLGO 6, MERGE 8): what a linear reading of it holds.
    """
    knn_ridges = {
        f"ridge_spatial_knn{k}": ("ridge_spatial", {"spot_graph": "knn", "n_neighbours": k}) for k in (5, 6, 8)
    }
    return {**VARIANTS, **knn_ridges}


def prepare(name: str, shared: Path, cache: Path) -> AnnData:
    """Slides with their handcrafted features, nuclei features and TRIPLEX neighbour views (cached)."""
    path = cache / f"probes_{name}.h5ad"
    if path.exists():
        return ad.read_h5ad(path)
    load, train, test, size, unit = DATASETS[name]
    adata = load(shared)
    adata = adata[adata.obs["library_id"].isin(train + test)].copy()
    opts = {"size": size, "unit": unit, "show_progress_bar": False}
    st.pp.image_features(adata, **opts)
    st.pp.image_features(adata, method="nuclei", n_jobs=-1, **opts)
    st.pp.neighbour_features(adata, tile_size=size, unit=unit, show_progress_bar=False)
    slim = AnnData(
        X=sp.csr_matrix((adata.n_obs, 0), dtype=np.float32),
        obs=adata.obs,
        obsm=dict(adata.obsm),
        uns={k: adata.uns[k] for k in ("spatial", "stpredict_features") if k in adata.uns},
    )
    cache.mkdir(parents=True, exist_ok=True)
    slim.write_h5ad(path)
    return slim


def ring_graphs(adata: AnnData) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Spots within 1 and within 2 grid steps of each spot, itself excluded (block-diagonal over slides)."""
    n = adata.n_obs
    ring1 = sp.lil_matrix((n, n))
    rows, cols = adata.obs["array_row"].to_numpy(), adata.obs["array_col"].to_numpy()
    for lib in pd.unique(adata.obs["library_id"]):
        idx = np.flatnonzero((adata.obs["library_id"] == lib).to_numpy())
        grid = infer_grid(adata, lib, rows[idx], cols[idx])
        block = grid_neighbours(rows[idx], cols[idx], grid, include_self=False)
        ring1[np.ix_(idx, idx)] = block
    ring1 = ring1.tocsr()
    ring2 = ((ring1 + ring1 @ ring1) > 0).astype(float).tolil()
    ring2.setdiag(0)
    return ring1, ring2.tocsr()


def _mean_over(graph: sp.csr_matrix, signal: np.ndarray) -> np.ndarray:
    degree = np.asarray(graph.sum(axis=1)).ravel()
    return (graph @ signal) / np.maximum(degree, 1)


def _standardise(signal: np.ndarray) -> np.ndarray:
    return (signal - signal.mean()) / signal.std()


def _without_linear_part(features: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """``signal`` minus its least-squares fit on the features: nothing left for a linear model to find."""
    design = np.column_stack([np.ones(len(features)), features])
    coef, *_ = np.linalg.lstsq(design, signal, rcond=None)
    return signal - design @ coef


def probe_signals(adata: AnnData, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One noise-free draw of every family (each of variance 1)."""
    features = np.asarray(adata.obsm["X_handcrafted"], dtype=np.float64)
    scale = features.std(0)
    f = (features - features.mean(0)) / np.where(scale > 0, scale, 1.0)  # a constant feature stays 0, not NaN
    d = f.shape[1]
    library = adata.obs["library_id"].to_numpy()

    def linear() -> np.ndarray:
        return _standardise(f @ rng.normal(size=d))

    ring1, ring2 = ring_graphs(adata)
    regions = np.empty(adata.n_obs, dtype=np.int64)
    for k, lib in enumerate(pd.unique(library)):
        idx = np.flatnonzero(library == lib)
        n_regions = max(2, round(len(idx) / SPOTS_PER_REGION))
        labels = KMeans(n_regions, n_init=4, random_state=int(rng.integers(1 << 31))).fit_predict(
            adata.obsm["spatial"][idx]
        )
        regions[idx] = labels + 1000 * k
    region_signal = linear()
    region_mean = pd.Series(region_signal).groupby(regions).transform("mean").to_numpy()
    a, b, c = linear(), linear(), linear()
    slide_mean = pd.Series(c).groupby(library).transform("mean").to_numpy()
    context = np.tanh(2 * _standardise(slide_mean))  # in (-1, 1): the slide sets how b enters
    u, v, w = linear(), linear(), linear()
    own = linear()
    return {
        "own_linear": linear(),
        "own_nonlinear": _standardise(_without_linear_part(f, u * v + np.cos(1.5 * w))),
        "ring1": _standardise(_mean_over(ring1, linear())),
        "ring2": _standardise(_mean_over(ring2, linear())),
        "region": _standardise(region_mean),
        "slide_context": _standardise(a + 1.5 * context * b),
        "mixed": _standardise(np.sqrt(0.5) * own + np.sqrt(0.5) * _standardise(_mean_over(ring2, linear()))),
    }


def probe_targets(adata: AnnData, draws: int, noise: float, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Targets ``(spots, families x draws)`` with noise, and a table naming each column's family and draw."""
    rng = np.random.default_rng(seed)
    columns, names = [], []
    for draw in range(draws):
        for family, signal in probe_signals(adata, rng).items():
            columns.append(signal + rng.normal(scale=np.sqrt(noise), size=len(signal)))
            names.append((family, draw))
    table = pd.DataFrame(names, columns=["family", "draw"])
    table["gene"] = PROBE_GENES[: len(table)]
    return np.column_stack(columns).astype(np.float32) + 3.0, table  # a positive, log1p-like level


def run_model(
    adata: AnnData, columns: pd.DataFrame, name: str, model: str, device: str, seed: int, extra: dict | None = None
) -> tuple[pd.DataFrame, float]:
    """Fit on the training slides, predict the test slides; Pearson per (test slide, target).

    ``extra``: ``model_params`` added to the variant's (for experiments).
    """
    _, train_libs, test_libs, size, unit = DATASETS[name]
    registered, params = variants().get(model, (model, {}))
    params = {**params, **(extra or {})}
    model_class = get_model(registered)
    cut = {"patch_size": size, "patch_unit": unit, "tile_size": size, "tile_unit": unit}
    params = {**params, **{k: v for k, v in cut.items() if k in model_class.defaults}}
    train = adata[adata.obs["library_id"].isin(train_libs)].copy()
    test = adata[adata.obs["library_id"].isin(test_libs)].copy()
    truth = test.X.copy()
    test.X = np.zeros_like(test.X)  # nothing measured reaches the predictor
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = st.tl.fit(
            train,
            model=registered,
            genes=list(columns["gene"]),
            layer=None,
            use_rep="X_handcrafted" if model_class(**params).reads_representation() else None,
            model_params=params,
            device=device,
            random_state=seed,
        )
        fit_s = time.perf_counter() - started
        predicted = predictor.predict(test, key_added="probe", copy=True).obsm["probe"]
    predicted = np.asarray(predicted, dtype=np.float64)
    rows = []
    library = test.obs["library_id"].to_numpy()
    for lib in test_libs:
        mask = library == lib
        pcc = per_slide_pearson(truth[mask], predicted[mask], library[mask])
        for j, r in enumerate(pcc):
            rows.append({"slide": lib, "family": columns.family[j], "draw": columns.draw[j], "pcc": r})
    table = pd.DataFrame(rows)
    table["val_score"] = predictor.validation.score
    return table, fit_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one draw")
    parser.add_argument("--noise", type=float, default=0.25, help="noise variance (signal variance 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "stpredict-bench")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/probes.csv"))
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    parser.add_argument(
        "--model-params",
        type=json.loads,
        default=None,
        help="JSON model_params added to every model's (experiments), e.g. '{\"go_prior\": false}'",
    )
    args = parser.parse_args()
    if args.table:
        print(markdown(pd.read_csv(args.out)))
        return
    logging.basicConfig(level=logging.WARNING)
    draws = 1 if args.quick else args.draws
    ceiling = 1 / np.sqrt(1 + args.noise)
    started = time.perf_counter()
    tables = []
    for name in args.datasets:
        t0 = time.perf_counter()
        adata = prepare(name, args.shared, args.cache)
        targets, columns = probe_targets(adata, draws, args.noise, args.seed)
        adata = AnnData(X=targets, obs=adata.obs, obsm=dict(adata.obsm), uns=dict(adata.uns))
        adata.var_names = list(columns["gene"])
        print(f"{name}: {adata.n_obs} spots, {targets.shape[1]} targets, prepared in {time.perf_counter() - t0:.0f} s")
        for model in args.models:
            table, fit_s = run_model(adata, columns, name, model, args.device, args.seed, args.model_params)
            table.insert(0, "dataset", name)
            table.insert(1, "model", model)
            table["fit_s"] = fit_s
            tables.append(table)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            pd.concat(tables, ignore_index=True).to_csv(args.out, index=False)
            scores = table.groupby("family", sort=False).pcc.mean()
            print(
                f"  {model:>22} fit {fit_s:6.1f} s  " + "  ".join(f"{f} {scores.get(f, np.nan):.3f}" for f in FAMILIES),
                flush=True,
            )
    results = pd.concat(tables, ignore_index=True)
    print(f"\nPCC per family (ceiling {ceiling:.3f}), mean over held-out slides and draws:")
    print(summary(results).round(3).to_string())
    print(f"\ntotal {time.perf_counter() - started:.0f} s; results in {args.out}")


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Mean Pearson per (data set, model) and family; families in :data:`FAMILIES` order."""
    table = results.groupby(["dataset", "model", "family"], sort=False).pcc.mean().unstack("family")
    return table[[f for f in FAMILIES if f in table.columns]]


def markdown(results: pd.DataFrame) -> str:
    """``summary`` as a markdown table: data set, model, fit seconds, one column per family."""
    table = summary(results).round(3)
    fit = results.groupby(["dataset", "model"], sort=False).fit_s.first().round(0).astype(int)
    families = list(table.columns)
    lines = ["| data set | model | fit s | " + " | ".join(families) + " |", "|---" * (3 + len(families)) + "|"]
    for (dataset, model), row in table.iterrows():
        cells = " | ".join(f"{row[f]:.3f}" for f in families)
        lines.append(f"| {dataset} | {model} | {fit[(dataset, model)]} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
