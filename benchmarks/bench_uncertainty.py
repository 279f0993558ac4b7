"""Prediction intervals and the out-of-distribution score on held-out slides.

Intervals: HER2ST C2-C6 leave-one-section-out and MOB leave-one-individual-out (``bench_models``' folds, 250
most expressed training genes, ``log1p`` targets, 44 handcrafted features); every model fitted with
``calibrate=True`` (3 folds of training slides/individuals give the out-of-fold residuals); nominal vs
empirical coverage on the held-out slides at 80/90/95 %, adaptive and constant intervals, and their width.

Out-of-distribution score (ridge's predictor of each fold, the same for every model reading the same
representation): the held-out slide, a stain-shifted copy of it (``bench_stain``'s re-rendering), a
low-resolution copy (image downsampled 4x and back), and a section of the other data set (MOB for HER2ST,
HER2ST C6 for MOB).

Usage::

    python benchmarks/bench_uncertainty.py --shared ../shared/data --out benchmarks/results/uncertainty.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from PIL import Image

import stpredict as st
from stpredict.io import source_image_path

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import DATASETS, dataset_params, prepare  # noqa: E402
from bench_stain import stain_shifted_copy  # noqa: E402

REP = "X_handcrafted"
LEVELS = (0.8, 0.9, 0.95)
OTHER = {"her2st": ("mob", "MOB1"), "mob": ("her2st", "C6")}  # a section of the other tissue, for the OOD check


def prepared(name: str, shared: Path, cache: Path) -> ad.AnnData:
    """The data set with its handcrafted features (cached between runs)."""
    path = cache / f"uncertainty_{name}.h5ad"
    if path.exists():
        return ad.read_h5ad(path)
    adata, _ = prepare(name, shared, ["log1p"], REP, ["ridge"])
    cache.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    return adata


def low_resolution_copy(adata: ad.AnnData, library_id: str, workdir: Path) -> ad.AnnData:
    """The slide with its image downsampled 4x and blown up again: a blurred, low-resolution scan."""
    with Image.open(source_image_path(adata, library_id)) as image:
        rgb = image.convert("RGB")
        small = rgb.resize((rgb.width // 4, rgb.height // 4), Image.Resampling.BILINEAR)
        path = workdir / f"{library_id}_lowres.png"
        small.resize(rgb.size, Image.Resampling.BILINEAR).save(path)
    copy = adata.copy()
    copy.uns["spatial"][library_id]["metadata"]["source_image_path"] = str(path)
    return copy


def ood_rows(predictor, test: ad.AnnData, library_id: str, other: ad.AnnData, workdir: Path) -> list[dict]:
    """Median OOD score of the held-out slide, its stain-shifted and low-resolution copies, another tissue."""
    slides = {
        "held-out slide": test,
        "stain-shifted copy": stain_shifted_copy(test, library_id, workdir),
        "low-resolution copy": low_resolution_copy(test, library_id, workdir),
        "other tissue": other,
    }
    rows = []
    for kind, slide in slides.items():
        slide = slide.copy()
        slide.obsm.pop(REP, None)  # recomputed with the predictor's recipe (and resolution)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor.predict(slide, key_added="pred")
        scores = slide.uns["pred"]["ood"]["slides"]
        warned = any("look unlike the training slides" in str(w.message) for w in caught)
        rows.append({"slide": kind, "ood_score": float(np.median(list(scores.values()))), "warned": warned})
    return rows


def run(name: str, models: list[str], shared: Path, cache: Path, workdir: Path) -> tuple[list[dict], list[dict]]:
    adata = prepared(name, shared, cache)
    other_name, other_slide = OTHER[name]
    other = prepared(other_name, shared, cache)
    other = other[other.obs["library_id"] == other_slide, []].copy()  # image only: the other species' genes differ
    coverage, ood = [], []
    for fold in st.tl.make_splits(adata, **DATASETS[name][2]):
        slides = adata.obs["library_id"]
        train, test = adata[slides.isin(fold.train)].copy(), adata[slides.isin(fold.test)].copy()
        held_out = "+".join(map(str, pd.unique(test.obs["library_id"])))
        for model in models:
            started = time.perf_counter()
            predictor = st.tl.fit(
                train,
                model=model,
                use_rep=REP,
                device="cpu",
                calibrate=3,
                model_params=dataset_params(model, {}, name),
            )
            test_copy = test.copy()
            predictor.predict(test_copy, key_added="pred")
            table = st.tl.interval_coverage(predictor, test_copy, key="pred", levels=LEVELS)
            table.insert(0, "dataset", DATASETS[name][0])
            table.insert(1, "fold", held_out)
            table.insert(2, "model", model)
            table["fit_s"] = time.perf_counter() - started
            coverage += table.to_dict("records")
            adaptive90 = table.query("method == 'adaptive' and nominal == 0.9").iloc[0]
            print(
                f"{name} {held_out} {model}: 90 % adaptive coverage {adaptive90.coverage:.3f}, width "
                f"{adaptive90.width:.2f} ({table.fit_s.iloc[0]:.0f} s)",
                flush=True,
            )
            if model == models[0]:
                first = str(pd.unique(test.obs["library_id"])[0])
                rows = ood_rows(predictor, test[test.obs["library_id"] == first].copy(), first, other, workdir)
                ood += [{"dataset": DATASETS[name][0], "fold": held_out, "section": first, **r} for r in rows]
                print(f"  OOD: {[(r['slide'], round(r['ood_score'], 2)) for r in rows]}", flush=True)
    return coverage, ood


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=["ridge", "mlp", "merge", "spahgc"])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "stpredict-bench")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/uncertainty.csv"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    coverage, ood = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.datasets:
            c, o = run(name, args.models, args.shared, args.cache, Path(workdir))
            coverage += c
            ood += o
            args.out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(coverage).to_csv(args.out, index=False)
            pd.DataFrame(ood).to_csv(args.out.with_name(args.out.stem + "_ood.csv"), index=False)
    print(f"done in {time.perf_counter() - started:.0f} s")
    print(markdown(pd.DataFrame(coverage), pd.DataFrame(ood)))


def markdown(coverage: pd.DataFrame, ood: pd.DataFrame) -> str:
    """The docs' tables: coverage and width per data set, model, method and level; OOD scores."""
    mean = coverage.groupby(["dataset", "model", "method", "nominal"], sort=False)[["coverage", "width"]].mean()
    wide = mean.unstack("nominal")
    lines = [
        "| data set | model | intervals | " + " | ".join(f"{n:.0%}: coverage / width" for n in LEVELS) + " |",
        "|---|---|---|" + "---|" * len(LEVELS),
    ]
    for (dataset, model, method), row in wide.iterrows():
        cells = " | ".join(f"{row[('coverage', n)]:.3f} / {row[('width', n)]:.2f}" for n in LEVELS)
        lines.append(f"| {dataset} | {model} | {method} | {cells} |")
    lines += ["", "| data set | held-out section | slide | OOD score | warned |", "|---|---|---|---|---|"]
    for _, row in ood.iterrows():
        lines.append(
            f"| {row.dataset} | {row.section} | {row.slide} | {row.ood_score:.2f} | {'yes' if row.warned else 'no'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
