"""Any registered models under one protocol, with honest folds.

- HER2ST patient C, sections C2-C6 (the sections with public images): leave-one-section-out (one patient,
  so within-patient; optimistic by design).
- Mouse olfactory bulb (STUtility), 4 sections of 2 individuals: leave-one-individual-out.

Targets: ``log1p`` (normalize_total 1e4), and the same 8n- or SPCS-smoothed (``st.pp.smooth``, slide by
slide): every prediction is scored against the measured ``log1p`` values, whatever the training target;
genes: the 250 most expressed, selected on each fold's training slides. Target ``sepal`` is SEPAL's own
benchmark pipeline: log2(1 + TPM) (log1p on MOB: no mouse gene lengths offline), the adaptive median
filter, the 256 genes of highest Moran's I on each fold's training slides (among genes detected in 10 %
of training spots and in every training slide), scored against that layer on originally non-zero entries
only (the filter's ``_imputed`` mask), as SEPAL reports. Representation: one ``obsm`` key
for every model (default: 44 handcrafted colour/texture features). PCC(H): the 50 genes with the best
inner-validation Pearson on training slides. Per fold: PCC(M), PCC(H), PCC-Patch, MSE, fit and predict
wall time, inner-validation score (training slides only); per (data set, model, target): the peak
resident memory of the process that ran it (a fresh process per run, prepared data set included).

Model variants (ablations) are named ``MODEL_VARIANT`` in :data:`VARIANTS`.

Usage::

    python benchmarks/bench_models.py --shared ../shared/data --models ridge ridge_spatial mlp merge merge_1hop
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from anndata import AnnData

import stpredict as st
from stpredict.models import get_model
from stpredict.models.ensemble import MEMBER_PRESETS
from stpredict.models.m2tglgo import PAPER_PARAMS as M2TGLGO_PAPER_PARAMS
from stpredict.models.merge import PAPER_PARAMS
from stpredict.models.spahgc import PAPER_PARAMS as SPAHGC_PAPER_PARAMS
from stpredict.models.triplex import PAPER_PARAMS as TRIPLEX_PAPER_PARAMS

DATASETS = {
    # name: (label, loader, split method, patch size, unit)
    "her2st": (
        "HER2ST C2-C6",
        lambda d: st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=d / "her2st"),
        {"method": "leave_one_slide_out", "allow_shared_patients": True},
        224,
        "px",
    ),
    # MOB images have ~8.7 µm/px: a 224 px patch would cover the whole section; use one array pitch (200 µm)
    "mob": ("MOB", lambda d: st.datasets.mob(path=d / "mob"), {"method": "leave_one_patient_out"}, 200, "um"),
}
#: sub-spot models' bins on low-resolution images (at least 4 image pixels a bin), with context 4 and 16 bins wide
COARSE_IMAGES = {"mob": {"bin_um": 40.0, "context_um": [160.0, 640.0]}}
TARGETS = {"log1p": None, "8n": "8n", "spcs": "spcs", "sepal": "adaptive_median"}
SEPAL_PIPELINE = {  # per data set: normalisation before the adaptive median filter
    "her2st": "tpm",
    "mob": "log1p",  # mouse: the bundled gene lengths are human (GENCODE), so no TPM here
}
ENCODER_REP = "X_encoder"  # per fold: a ResNet18 trained by st.tl.train_encoder on that fold's training slides only
# name: (registered model, model_params); any other name is a registered model with its defaults.
# Every model's published ablations are MODEL_ABLATION (st.tl.model_ablations); further variants below.
VARIANTS = {
    f"{model}_{ablation}": (model, params)
    for model in st.tl.available_models()
    for ablation, params in st.tl.model_ablations(model).items()
}
# the graph models with a linear path (not in the papers): ridge_spatial's function inside the model
VARIANTS.update(
    {
        f"{model}_linear": (model, {"linear_path": True})
        for model in st.tl.available_models()
        if "linear_path" in get_model(model).defaults
    }
)
# the graph models on the array's grid ring instead of their papers' kNN (not in the papers), with and
# without the linear path
VARIANTS.update(
    {
        f"{model}_grid{suffix}": (model, {"spot_graph": "grid", **extra})
        for model in st.tl.available_models()
        if {"spot_graph", "linear_path"} <= set(get_model(model).defaults)
        for suffix, extra in (("", {}), ("_linear", {"linear_path": True}))
    }
)
VARIANTS.update(
    {
        "merge_paper": ("merge", dict(PAPER_PARAMS)),  # the paper's 18 M-weight network, 400 epochs
        # SEPAL: default = CNN stage 1 trained on the fold's patches (reads pixels, not the shared representation)
        # SEPAL with a linear stage 1 on the shared representation (the same inputs as ridge)
        "sepal_linear": ("sepal", {"stage1": "linear"}),
        "sepal_linear_stage1": ("sepal", {"stage1": "linear", "stage2": False}),
        "sepal_linear_absolute": ("sepal", {"stage1": "linear", "deltas": False}),
        "sepal_linear_2hop": ("sepal", {"stage1": "linear", "n_hops": 2}),
        "sepal_linear_3hop": ("sepal", {"stage1": "linear", "n_hops": 3}),
        # SEPAL with ridge's closed-form head as stage 1: does stage 2 add to the ridge baseline?
        "sepal_ridge": ("sepal", {"stage1": "ridge"}),
        "sepal_ridge_stage1": ("sepal", {"stage1": "ridge", "stage2": False}),
        "sepal_ridge_2hop": ("sepal", {"stage1": "ridge", "n_hops": 2}),
        # TRIPLEX's single-view models (TEM, NEM, GEM)
        "triplex_target": ("triplex", {"views": ["target"]}),
        "triplex_neighbour": ("triplex", {"views": ["neighbour"]}),
        "triplex_global": ("triplex", {"views": ["global"]}),
        "triplex_paper": ("triplex", dict(TRIPLEX_PAPER_PARAMS)),  # 224 px fine-tuned ResNet18, dim 512: GPU-sized
        # M2TGLGO stopping later: the paper's 500 epochs / patience 50, and 1200 / 100 (probes: patience 20 stops
        # before the non-linear signal is learnt)
        "m2tglgo_patience50": ("m2tglgo", {"max_epochs": 500, "patience": 50}),
        "m2tglgo_patience100": ("m2tglgo", {"max_epochs": 1200, "patience": 100}),
        # SpaHGC's K / Q study
        "spahgc_k3": ("spahgc", {"k": 3}),
        "spahgc_k15": ("spahgc", {"k": 15}),
        "spahgc_q8": ("spahgc", {"n_neighbours": 8}),
        "m2tglgo_no_losses": ("m2tglgo", {"ranking_weight": 0.0, "reconstruction_weight": 0.0}),
        "m2tglgo_go_fixed": ("m2tglgo", {"gene_features": "go"}),  # GO SVD gene features kept fixed (as Gene2Vec)
        "m2tglgo_paper": ("m2tglgo", dict(M2TGLGO_PAPER_PARAMS)),
        "spahgc_paper": ("spahgc", dict(SPAHGC_PAPER_PARAMS)),
        # every seed model and the baselines in one ensemble (the default holds the five that read no pixels)
        "ensemble_all": (
            "ensemble",
            {"models": ["ridge", "ridge_spatial", "mlp", "merge", "sepal", "triplex", "spahgc", "m2tglgo"]},
        ),
        # the 'best' preset (every seed method and baseline as candidates; which are used is chosen by each
        # fit's inner cross-validation); 2 stacking folds instead of 3 to keep the pixel models' CPU cost down
        "ensemble_best": ("ensemble", {"models": list(MEMBER_PRESETS["best"]), "stacking_folds": 2}),
    }
)
# data sets whose genes the bundled (human) Gene Ontology does not annotate: M2TGLGO runs without its GO prior
WITHOUT_GO = {"mob"}


def encoder_embeddings(adata: AnnData, folds: list, name: str, cache: Path, device: str) -> dict[str, np.ndarray]:
    """Per fold, embeddings of every spot by an encoder trained on that fold's training slides (cached)."""
    _, _, _, size, unit = DATASETS[name]
    embeddings = {}
    for fold in folds:
        path = cache / f"{name}_{fold.name}_encoder.npy"
        if not path.exists():
            started = time.perf_counter()
            train = adata[adata.obs["library_id"].isin(fold.train)].copy()
            st.pp.select_genes(train, n_genes=250)
            encoder = st.tl.train_encoder(
                train, size=size, unit=unit, input_size=64, epochs=15, device=device, show_progress_bar=False
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, encoder.embed(adata, device=device).astype(np.float32))
            print(f"  encoder for fold {fold.name}: {time.perf_counter() - started:.0f} s", flush=True)
        embeddings[fold.name] = np.load(path)
    return embeddings


def run_one(
    path: str,
    name: str,
    model: str,
    target: str,
    rep: str,
    device: str,
    cache: Path,
    score_against: str = "log1p",
    random_state: int = 0,
) -> tuple[pd.DataFrame, float]:
    """Cross-validate one (model, target) in this (fresh) process; its table and peak resident memory in MB."""
    logging.basicConfig(level=logging.WARNING)
    adata = ad.read_h5ad(path)
    folds = st.tl.make_splits(adata, **DATASETS[name][2])
    registered, params = VARIANTS.get(model, (model, {}))
    params = dataset_params(registered, params, name)
    if registered == "ensemble":  # each member gets the data set's patch geometry and GO setting too
        members = params.get("models", get_model("ensemble").defaults["models"])
        given = dict(params.get("member_params", {}))
        params = {**params, "member_params": {m: dataset_params(m, given.get(m, {}), name) for m in members}}
    configured = get_model(registered)(**params)
    reads_rep = configured.reads_representation()
    layer = target_layer(target)
    options = {
        "model": registered,
        "model_params": params,
        "layer": layer,
        "eval_layer": layer if score_against == "target" else "log1p",
        "use_rep": rep if reads_rep else None,
        "device": device,
        "key_added": "cv",
        "show_progress_bar": False,
        "random_state": random_state,
    }
    if target == "sepal":  # SEPAL's protocol: its genes, scored on the filtered layer's measured entries
        options.update(
            gene_selection={"method": "moran", "n_genes": 256, "layer": layer},
            eval_layer=layer,
            mask_layer=f"{layer}_imputed",
        )
    if rep == ENCODER_REP and reads_rep:  # each fold reads the embeddings of its own encoder
        embeddings = encoder_embeddings(adata, folds, name, cache, device)
        tables = []
        for fold in folds:
            adata.obsm[rep] = embeddings[fold.name]
            tables.append(st.tl.cross_validate(adata, splits=[fold], **options))
        table = pd.concat(tables, ignore_index=True)
    else:
        table = st.tl.cross_validate(adata, splits=folds, **options)
    return table, peak_rss_mb()


def dataset_params(registered: str, params: dict, name: str) -> dict:
    """``params`` with the data set's patch and tile size for models that read pixels, and M2TGLGO's GO setting."""
    model_class = get_model(registered)
    if model_class(**params).reads_pixels():  # patches and neighbour tiles of the data set's patch size
        size, unit = DATASETS[name][3], DATASETS[name][4]
        cut = {"patch_size": size, "patch_unit": unit, "tile_size": size, "tile_unit": unit}
        params = {**params, **{k: v for k, v in cut.items() if k in model_class.defaults}}
    if registered == "m2tglgo" and name in WITHOUT_GO:
        params = {**params, "go_prior": False}  # mouse genes: the bundled GO annotates human genes
    if registered == "istar" and name in COARSE_IMAGES:  # ~8.7 µm/px: an 8 µm bin would be one pixel
        context = [] if params.get("context_um") == [] else COARSE_IMAGES[name]["context_um"]
        params = {**params, **COARSE_IMAGES[name], "context_um": context}
    return params


def target_layer(target: str) -> str:
    return "log1p" if TARGETS[target] is None else ("sepal" if target == "sepal" else f"log1p_{target}")


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux ``VmHWM``: reset by exec, unlike ``ru_maxrss``, which a
    spawned process inherits from the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: an upper bound


def prepare(name: str, shared: Path, targets: list[str], rep: str, models: list[str]) -> tuple[AnnData, list]:
    label, load, split, size, unit = DATASETS[name]
    adata = load(shared)
    st.pp.normalize(adata)
    for target in targets:
        if target == "sepal":
            source = "log1p"
            if SEPAL_PIPELINE[name] == "tpm":
                st.pp.normalize(adata, method="tpm")
                source = "log2_tpm"
            st.pp.smooth(adata, method="adaptive_median", layer=source, key_added="sepal", show_progress_bar=False)
        elif TARGETS[target] is not None:
            st.pp.smooth(
                adata, method=TARGETS[target], layer="log1p", key_added=target_layer(target), show_progress_bar=False
            )
    if rep != ENCODER_REP and rep not in adata.obsm:
        st.pp.image_features(adata, size=size, unit=unit, show_progress_bar=False, key_added=rep)
    if any("m2tglgo" in _uses(m) for m in models):
        # M2TGLGO's nuclei morphology and topology, computed once and read by every fold and variant
        st.pp.image_features(adata, method="nuclei", size=size, unit=unit, n_jobs=-1, show_progress_bar=False)
    if any("triplex" in _uses(m) for m in models):
        # TRIPLEX's neighbour tiles encoded once and stored with their recipe: every fold and variant reads them
        st.pp.neighbour_features(adata, tile_size=size, unit=unit, show_progress_bar=False)
    return adata, st.tl.make_splits(adata, **split)


def _uses(model: str) -> set[str]:
    """The registered models a benchmark name runs (an ensemble's members included)."""
    registered, params = VARIANTS.get(model, (model, {}))
    if registered == "ensemble":
        return {registered, *params.get("models", get_model("ensemble").defaults["models"])}
    return {registered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--models", nargs="+", default=["ridge", "ridge_spatial", "mlp"])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument(
        "--rep",
        default="X_handcrafted",
        help=f"obsm representation every model reads; {ENCODER_REP!r}: a ResNet18 trained per fold on its training slides",
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "stpredict-bench")
    parser.add_argument(
        "--score-against",
        choices=["log1p", "target"],
        default="log1p",
        help="score predictions against measured log1p (default) or the smoothed training target (MERGE's protocol)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--random-state", type=int, default=0, help="the models' seed (seed-to-seed variation)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/models.csv"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    tables = []
    for name in args.datasets:
        t0 = time.perf_counter()
        adata, folds = prepare(name, args.shared, args.targets, args.rep, args.models)
        if args.rep == ENCODER_REP:
            encoder_embeddings(adata, folds, name, args.cache, args.device)  # trained once, read by every run
        print(
            f"{DATASETS[name][0]}: {adata.n_obs} spots, {len(folds)} folds, prepared in {time.perf_counter() - t0:.0f} s"
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/{name}.h5ad"
            adata.write_h5ad(path)
            for model in args.models:
                for target in args.targets:
                    # a fresh process per run: its peak memory is its own, not the high-water mark of earlier runs
                    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                        table, peak_mb = pool.submit(
                            run_one,
                            path,
                            name,
                            model,
                            target,
                            args.rep,
                            args.device,
                            args.cache,
                            args.score_against,
                            args.random_state,
                        ).result()
                    table.insert(0, "dataset", DATASETS[name][0])
                    table.insert(1, "model", model)
                    table.insert(2, "target", target)
                    table["peak_rss_mb"] = peak_mb
                    tables.append(table)
                    # written after every run so that an interrupted benchmark keeps what it finished
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    pd.concat(tables, ignore_index=True).to_csv(args.out, index=False)
                    print(
                        f"  {model:>14} on {target:>5}: PCC(M) {table.pcc_m.mean():.3f}  PCC(H) {table.pcc_h.mean():.3f}  "
                        f"val {table.val_score.mean():.3f}  fit {table.groupby('fold').fit_s.first().sum():.1f} s  "
                        f"peak {peak_mb:.0f} MB",
                        flush=True,
                    )
    results = pd.concat(tables, ignore_index=True)
    summary = results.groupby(["dataset", "model", "target"], sort=False).agg(
        pcc_m=("pcc_m", "mean"),
        pcc_h=("pcc_h", "mean"),
        pcc_patch=("pcc_patch", "mean"),
        mse=("mse", "mean"),
        mae=("mae", "mean"),
        r2_gene=("r2", "mean"),
        r2_patch=("r2_patch", "mean"),
        fit_s_per_fold=("fit_s", "mean"),
        predict_s_per_fold=("predict_s", "mean"),
        val_score=("val_score", "mean"),
        peak_rss_mb=("peak_rss_mb", "max"),
    )
    print("\nmean over held-out slides:")
    print(summary.round(3).to_string())
    figure(results, args.out.with_suffix(".png"), args.score_against)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; results in {args.out}")


def figure(results: pd.DataFrame, path: Path, score_against: str = "log1p") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    grid = sns.catplot(
        data=results,
        x="target",
        y="pcc_m",
        hue="model",
        col="dataset",
        kind="bar",
        errorbar=None,
        height=3.2,
        aspect=1.2,
        sharey=False,
    )
    grid.map_dataframe(
        sns.stripplot, x="target", y="pcc_m", hue="model", dodge=True, palette="dark:k", size=3, legend=False
    )
    scored = "measured log1p" if score_against == "log1p" else "the training target"
    if "sepal" in set(results["target"]):
        scored += " (target 'sepal': its own layer, originally non-zero entries)"
    grid.set_axis_labels("training target", "PCC(M) per held-out slide")
    grid.figure.suptitle(f"scored against {scored}", fontsize=9, y=1.02)
    grid.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
