"""Measured vs M2TGLGO-predicted gene-gene correlations on a held-out HER2ST section (docs/benchmarks.md).

Trains M2TGLGO (defaults, GO prior from the bundled human Gene Ontology) and ridge on C3-C6 with the
handcrafted representation and the nuclei features, the 250 most expressed training genes, predicts C2
(fold C2 of ``benchmarks/bench_models.py``) and draws the correlations of the 50 most variable of those
genes on the training sections (as the paper's HVG-50; never chosen on C2).

Usage::

    python docs/scripts/m2tglgo_gene_correlation.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import stpredict as st  # noqa: E402


def main() -> None:
    """Fit on four sections, predict the fifth, score and draw the correlation structure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--test", default="C2")
    parser.add_argument("--out", type=Path, default=Path("docs/_static/m2tglgo_gene_correlation_her2st_C2.png"))
    args = parser.parse_args()
    adata = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=args.shared / "her2st")
    st.pp.normalize(adata)
    st.pp.image_features(adata, show_progress_bar=False)
    st.pp.image_features(adata, method="nuclei", n_jobs=-1, show_progress_bar=False)
    is_test = adata.obs["library_id"] == args.test
    train, test = adata[~is_test].copy(), adata[is_test].copy()
    st.pp.select_genes(train, n_genes=250)
    selected = train.uns["selected"]["genes"]
    variance = train[:, selected].to_df(layer="log1p").var()
    genes = variance.sort_values(ascending=False).index[:50].tolist()
    scores = {}
    for model in ("m2tglgo", "ridge"):
        predictor = st.tl.fit(train, model=model, device="cpu")
        predictor.predict(test, key_added=f"pred_{model}")
        st.tl.gene_correlation(
            test, layer_true="log1p", layer_pred=f"pred_{model}", genes=genes, key_added=f"corr_{model}"
        )
        scores[model] = test.uns[f"corr_{model}"]["score"]
    print("structure score (Pearson of off-diagonal correlations):", {k: round(v, 3) for k, v in scores.items()})
    axes = st.pl.gene_correlation(test, key="corr_m2tglgo", show=False)
    axes[0].figure.suptitle(
        f"HER2ST {args.test}, 50 most variable training genes: measured vs M2TGLGO "
        f"(structure score {scores['m2tglgo']:.3f}; ridge {scores['ridge']:.3f})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    axes[0].figure.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
