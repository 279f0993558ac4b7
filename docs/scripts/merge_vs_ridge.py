"""Maps of measured vs ridge vs MERGE predictions on a held-out HER2ST section (docs/benchmarks.md).

Trains both on C3-C6 (SPCS targets, handcrafted features, the 250 most expressed training genes) and
predicts C2, as fold C2 of ``benchmarks/bench_models.py``.

Usage::

    python docs/scripts/merge_vs_ridge.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import stpredict as st  # noqa: E402
from stpredict._metrics import column_pearson  # noqa: E402
from stpredict.pl._spatial import slide_view  # noqa: E402


def main() -> None:
    """Fit ridge and MERGE on four sections, predict the fifth and draw two genes side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--genes", nargs="+", default=["ERBB2", "FASN"])
    parser.add_argument("--out", type=Path, default=Path("docs/_static/merge_vs_ridge_her2st_C2.png"))
    args = parser.parse_args()
    adata = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=args.shared / "her2st")
    st.pp.normalize(adata)
    st.pp.smooth(adata, method="spcs", layer="log1p", key_added="log1p_spcs", show_progress_bar=False)
    st.pp.image_features(adata, show_progress_bar=False)
    train, test = adata[adata.obs["library_id"] != "C2"].copy(), adata[adata.obs["library_id"] == "C2"].copy()
    st.pp.select_genes(train, n_genes=250)
    for model in ("ridge", "merge"):
        st.tl.fit(train, model=model, layer="log1p_spcs", device="cpu").predict(test, key_added=model)
    view = slide_view(test, "C2")
    fig, axes = plt.subplots(len(args.genes), 3, figsize=(11, 3.6 * len(args.genes)), squeeze=False)
    for row, gene in enumerate(args.genes):
        measured = test[:, gene].layers["log1p"].ravel()
        panels = [("measured log1p", measured)]
        for model in ("ridge", "merge"):
            predicted = test.obsm[model][gene].to_numpy()
            r = column_pearson(measured[:, None], predicted[:, None])[0]
            panels.append((f"{model} (r = {r:.2f})", predicted))
        for col, (title, values) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(view.image, alpha=0.6)
            lo, hi = np.percentile(values, [1, 99])
            points = ax.scatter(*view.xy.T, c=values, s=view.spot_size, vmin=lo, vmax=hi, cmap="viridis")
            fig.colorbar(points, ax=ax, shrink=0.75)
            ax.set_title(f"{gene}: {title}", fontsize=9)
            view.frame(ax)
    fig.suptitle("HER2ST C2, held out; trained on C3-C6 (SPCS targets, handcrafted features)", fontsize=10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
