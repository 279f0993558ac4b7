"""Stain normalisation: ridge trained on HER2ST C2-C5 predicts C6 and a stain-shifted copy of C6.

The copy re-renders C6 with other stain vectors and intensities (haematoxylin bluer and 30 % stronger, eosin
paler, as another lab's staining), through the same Macenko model the normaliser uses. Ridge is trained on
handcrafted colour/texture features and on nuclei morphology features, each without and with Macenko
normalisation to a reference estimated on the training sections (the test section never shapes it).
PCC(M) against C6's measured expression.

With ``--mob``: MOB leave-one-individual-out, raw vs normalised features (reference from each fold's
training individual).

Usage::

    python benchmarks/bench_stain.py --shared ../shared/data --out benchmarks/results/stain.csv
    python benchmarks/bench_stain.py --shared ../shared/data --mob --out benchmarks/results/stain_mob.csv
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import stpredict as st
from stpredict.io import source_image_path

BLOCK = 512  # image rows re-rendered at a time


def shifted_stain(stain: dict) -> dict:
    """Another lab's stain: haematoxylin rotated towards blue and 30 % stronger, eosin 30 % paler."""
    matrix = np.asarray(stain["stain_matrix"], dtype=float)
    h = matrix[:, 0] + np.array([0.15, 0.05, -0.10])
    e = matrix[:, 1] + np.array([-0.05, 0.10, 0.05])
    matrix = np.column_stack([h / np.linalg.norm(h), e / np.linalg.norm(e)])
    max_c = np.asarray(stain["max_concentrations"], dtype=float) * np.array([1 / 1.3, 1 / 0.7])
    return {"stain_matrix": matrix.tolist(), "max_concentrations": max_c.tolist()}


def stain_shifted_copy(adata, library_id: str, workdir: Path):
    """The slide with its image re-rendered in a shifted stain (written block by block)."""
    own = st.pp.estimate_stain(st.pp.extract_patches(adata, size=224)[:: max(1, adata.n_obs // 64)])
    target = shifted_stain(own)
    with Image.open(source_image_path(adata, library_id)) as image:
        rgb = np.asarray(image.convert("RGB"))
    out = np.empty_like(rgb)
    for start in range(0, rgb.shape[0], BLOCK):
        out[start : start + BLOCK] = st.pp.normalize_stain(rgb[start : start + BLOCK], own, target)
    path = workdir / f"{library_id}_shifted.png"
    Image.fromarray(out).save(path)
    copy = adata.copy()
    copy.uns["spatial"][library_id]["metadata"]["source_image_path"] = str(path)
    return copy


def ridge_rows(train, slides: dict, genes: list[str], reference: dict, patch: dict) -> list[dict]:
    """PCC(M) of ridge on raw and on stain-normalised features (handcrafted, nuclei) for each named slide."""
    rows = []
    for method in ("handcrafted", "nuclei"):
        for normalise in (False, True):
            started = time.perf_counter()
            options = {"method": method, "show_progress_bar": False, "n_jobs": -1, **patch}
            if normalise:
                options["stain_reference"] = reference
            st.pp.image_features(train, key_added="X_rep", **options)
            predictor = st.tl.fit(train, model="ridge", genes=genes, use_rep="X_rep")
            for name, slide in slides.items():
                slide = slide.copy()
                predictor.predict(slide, key_added="pred")  # computes X_rep with the recorded recipe
                table = st.tl.evaluate(slide, layer_pred="pred", genes=genes, inplace=False)
                row = {
                    "features": method,
                    "stain_normalised": normalise,
                    "test_slide": name,
                    "pcc_m": float(table["pearson"].mean()),
                    "seconds": time.perf_counter() - started,
                }
                print(row, flush=True)
                rows.append(row)
    return rows


def write(rows: list[dict], out: Path) -> None:
    table = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(table.round(3).to_string(index=False))


def mob_individuals(shared: Path, out: Path) -> None:
    """MOB leave-one-individual-out (200 µm patches): ridge on raw vs stain-normalised features."""
    adata = st.datasets.mob(path=shared / "mob")
    st.pp.normalize(adata)
    rows = []
    for fold in st.tl.make_splits(adata, method="leave_one_patient_out"):
        train = adata[adata.obs["library_id"].isin(fold.train)].copy()
        test = adata[adata.obs["library_id"].isin(fold.test)].copy()
        st.pp.select_genes(train, n_genes=250)
        genes = list(train.uns["selected"]["genes"])
        reference = st.pp.stain_reference(train, size=200, unit="um")
        slides = {f"MOB individual {fold.name}": test}
        rows += ridge_rows(train, slides, genes, reference, {"size": 200, "unit": "um"})
    write(rows, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--test", default="C6")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stain.csv"))
    parser.add_argument("--mob", action="store_true", help="MOB leave-one-individual-out instead")
    args = parser.parse_args()
    if args.mob:
        mob_individuals(args.shared, args.out)
        return
    adata = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=args.shared / "her2st")
    st.pp.normalize(adata)
    train = adata[adata.obs["library_id"] != args.test].copy()
    test = adata[adata.obs["library_id"] == args.test].copy()
    st.pp.select_genes(train, n_genes=250)
    genes = list(train.uns["selected"]["genes"])
    reference = st.pp.stain_reference(train)
    with tempfile.TemporaryDirectory() as workdir:
        shifted = stain_shifted_copy(test, args.test, Path(workdir))
        slides = {f"{args.test} original": test, f"{args.test} stain-shifted": shifted}
        rows = ridge_rows(train, slides, genes, reference, {})
    write(rows, args.out)


if __name__ == "__main__":
    main()
