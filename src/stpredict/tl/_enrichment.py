"""Over-representation of gene sets among genes of interest (e.g. the markers of a predicted region)."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, hypergeom

from .._logging import warn


def _query_genes(genes_or_de, *, pval_cutoff: float, min_logfc: float) -> tuple[dict[str, list[str]], list[str] | None]:
    """``{group: genes}`` of interest, and the genes a DE table was computed on (its natural background)."""
    if isinstance(genes_or_de, pd.DataFrame):
        table = genes_or_de
        needed = {"names", "pvals_adj", "logfoldchanges"}
        if not needed <= set(table.columns):
            msg = f"A differential expression table needs columns {sorted(needed)} (st.tl.differential_expression); got {list(table.columns)}."
            raise KeyError(msg)
        if "group" not in table:
            table = table.assign(group="all")
        tested = list(pd.unique(table["names"].astype(str)))
        up = table[(table["pvals_adj"] < pval_cutoff) & (table["logfoldchanges"] > min_logfc)]
        return {str(g): list(up.loc[up["group"] == g, "names"].astype(str)) for g in pd.unique(table["group"])}, tested
    if isinstance(genes_or_de, str):
        genes_or_de = [genes_or_de]
    return {"genes": [str(g) for g in genes_or_de]}, None


def enrichment(
    genes_or_de: Sequence[str] | pd.DataFrame,
    *,
    gene_sets: str | PathLike | dict = "hallmark",
    background: Sequence[str] | None = None,
    min_size: int = 5,
    max_size: int = 2000,
    pval_cutoff: float = 0.05,
    min_logfc: float = 0.25,
) -> pd.DataFrame:
    """Over-representation analysis: one-sided hypergeometric test per gene set, Benjamini-Hochberg adjusted.

    Parameters
    ----------
    genes_or_de
        Genes of interest, or a table of :func:`differential_expression` (per group, the genes with
        adjusted p below ``pval_cutoff`` and log fold change above ``min_logfc``).
    gene_sets
        ``'hallmark'`` (MSigDB, bundled), ``'go_bp'`` (from the bundled Gene Ontology), a GMT path, or a
        ``{name: genes}`` mapping (see :func:`stpredict.datasets.gene_sets`).
    background
        The universe the genes were drawn from. Default: the genes of the DE table, i.e. the genes that
        were predicted (for a gene list: the union of the gene sets). The genome is the wrong universe for
        predicted expression: only the predicted genes could ever be markers, and most of them are highly
        expressed, so a genome background inflates every set rich in such genes.
    min_size, max_size
        Sets with fewer or more background genes are not tested.

    Returns
    -------
    One row per (group,) set tested: ``set``, ``overlap`` (k), ``set_size`` (K, in the background),
    ``n_query`` (n), ``n_background`` (N), ``gene_ratio`` (k/n), ``background_ratio`` (K/N),
    ``pvalue`` = P(X ≥ k), X ~ Hypergeom(N, K, n) (``scipy.stats.hypergeom.sf``), ``padj``
    (Benjamini-Hochberg over the sets tested for that group) and the overlapping ``genes``; sorted by
    ``padj``.

    Examples
    --------
    >>> import stpredict as st
    >>> sets = {"A": ["g1", "g2", "g3", "g4", "g5"], "B": ["g6", "g7", "g8", "g9", "g10"]}
    >>> table = st.tl.enrichment(["g1", "g2", "g3"], gene_sets=sets, background=[f"g{i}" for i in range(1, 21)])
    >>> table[["set", "overlap", "pvalue"]].round(4)
      set  overlap  pvalue
    0   A        3  0.0088
    1   B        0  1.0000
    """
    from ..datasets._gene_sets import as_gene_sets, gene_set_table

    queries, tested = _query_genes(genes_or_de, pval_cutoff=pval_cutoff, min_logfc=min_logfc)
    sets = as_gene_sets(gene_sets)
    table = gene_set_table(sets)
    universe = pd.Index(
        pd.unique(pd.Series([*(background if background is not None else tested or table["gene"])], dtype=str))
    )
    table = table[table["gene"].isin(universe)]
    sizes = table.groupby("set").size()
    testable = sizes[(sizes >= min_size) & (sizes <= max_size)].index
    table = table[table["set"].isin(testable)]
    n_background = len(universe)
    results = []
    for group, query in queries.items():
        query = pd.Index(pd.unique(pd.Series(query, dtype=str)))
        outside = query.difference(universe)
        if len(outside):
            warn(
                f"enrichment: {len(outside)} gene(s) of {group!r} are not in the background and are ignored: "
                f"{list(outside[:5])}"
            )
        query = query.intersection(universe)
        hits = table[table["gene"].isin(query)]
        overlap = hits.groupby("set").size().reindex(testable, fill_value=0)
        genes = hits.groupby("set")["gene"].apply(lambda g: sorted(g)).reindex(testable)
        k, big_k, n = overlap.to_numpy(), sizes.reindex(testable).to_numpy(), len(query)
        pvalue = hypergeom.sf(k - 1, n_background, big_k, n) if n else np.ones(len(k))
        result = pd.DataFrame(
            {
                "group": group,
                "set": testable,
                "overlap": k,
                "set_size": big_k,
                "n_query": n,
                "n_background": n_background,
                "gene_ratio": k / n if n else np.zeros(len(k)),
                "background_ratio": big_k / n_background,
                "pvalue": np.clip(pvalue, 0.0, 1.0),
                "genes": [g if isinstance(g, list) else [] for g in genes],
            }
        )
        result["padj"] = false_discovery_control(result["pvalue"], method="bh") if len(result) else []
        results.append(result.sort_values(["padj", "pvalue", "set"]).reset_index(drop=True))
    out = pd.concat(results, ignore_index=True) if results else pd.DataFrame()
    if set(queries) == {"genes"}:
        out = out.drop(columns="group")
    return out
