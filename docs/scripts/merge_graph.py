"""The figure of MERGE's hierarchical graph in docs/models.md (HER2ST section C3, handcrafted features).

Usage::

    python docs/scripts/merge_graph.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import stpredict as st  # noqa: E402


def main() -> None:
    """Build the graph of one section and draw its three facets side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--section", default="C3")
    parser.add_argument("--out", type=Path, default=Path("docs/_static/merge_graph_her2st_C3.png"))
    args = parser.parse_args()
    adata = st.datasets.her2st([args.section], path=args.shared / "her2st")
    st.pp.image_features(adata, show_progress_bar=False)
    st.pp.hierarchical_graph(adata)  # defaults: ~100 spots per cluster, feature centroids
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6))
    st.pl.hierarchical_graph(adata, color="spatial", edges=("internal_spatial", "shortcut"), ax=axes[0], show=False)
    st.pl.hierarchical_graph(adata, color="feature", edges=("internal_feature", "shortcut"), ax=axes[1], show=False)
    st.pl.hierarchical_graph(adata, color="feature", edges=("spatial",), ax=axes[2], show=False)
    axes[0].set_title(f"{args.section}: spatial clusters, internal + shortcut edges")
    axes[1].set_title(f"{args.section}: feature clusters, internal + shortcut edges")
    axes[2].set_title(f"{args.section}: 8 nearest spatial neighbours")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    n = adata.uns["merge"]["n_clusters"][args.section]
    print(f"{adata.n_obs} spots, clusters {n}, {int(adata.obs['merge_centroid'].sum())} centroids -> {args.out}")


if __name__ == "__main__":
    main()
