"""Speed of the Gene Ontology similarity (M2TGLGO Eq. 10-12): target 250 genes in under 10 s.

Times ``st.datasets.gene_ontology()`` (the bundled release, first load) and ``st.tl.gene_similarity`` on
the most expressed genes of HER2ST sections C2-C6 (250, 1000, 5000 genes), with peak memory.

Usage::

    python benchmarks/bench_gene_similarity.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

import stpredict as st


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sizes", nargs="+", type=int, default=[250, 1000, 5000])
    args = parser.parse_args()
    adata = st.datasets.her2st(["C2", "C3", "C4", "C5", "C6"], path=args.shared / "her2st")
    started = time.perf_counter()
    go = st.datasets.gene_ontology()
    print(f"load bundled GO: {time.perf_counter() - started:.2f} s  {go!r}")
    totals = np.asarray(adata.X.sum(axis=0)).ravel()
    for n in args.sizes:
        genes = adata.var_names[np.argsort(-totals)[:n]]
        subset = adata[:, genes].copy()
        started = time.perf_counter()
        st.tl.gene_similarity(subset, go=go)
        elapsed = time.perf_counter() - started
        graph = subset.varp["go_similarity_connectivities"]
        unannotated = len(subset.uns["go_similarity"]["unannotated"])
        print(
            f"{n:>5} genes: {elapsed:6.2f} s, {graph.nnz} gene-graph edges, {unannotated} unannotated, "
            f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )


if __name__ == "__main__":
    main()
