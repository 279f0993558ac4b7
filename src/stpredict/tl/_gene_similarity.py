"""Gene Ontology similarity between the genes of an AnnData (M2TGLGO's gene graph), usable on its own."""

from __future__ import annotations

import time
from collections.abc import Sequence

from anndata import AnnData

from .._docs import doc_params
from .._logging import logger, warn
from .._validate import check_adata
from ..io._gene_ontology import GeneOntology, gene_graph

MAX_GENES = 10_000  # a dense genes x genes float32 matrix of this size is 400 MB


@doc_params("copy")
def gene_similarity(
    adata: AnnData,
    *,
    go: GeneOntology | None = None,
    namespaces: Sequence[str] = ("BP", "MF", "CC"),
    n_top: int = 10,
    key_added: str = "go_similarity",
    copy: bool = False,
) -> AnnData | None:
    """Gene Ontology similarity of every pair of genes, and the thresholded gene graph of M2TGLGO.

    Term similarity ``b = |shared ancestors| / max(depth)`` within a namespace (0 across namespaces;
    ancestors over ``is_a`` and ``part_of``); gene similarity = mean of ``b`` over all pairs of the two
    genes' terms (Shi et al., CVPR 2025, Eq. 10-12). Gene graph: ``A[i, j] = 1`` where ``S[i, j]`` exceeds
    gene ``i``'s mean of its ``n_top`` largest similarities. Symbols unknown to GO are matched through
    NCBI aliases; genes with no annotation get no edges (reported in the log and in ``uns``). With the mean
    over all term pairs, a gene annotated with many unrelated terms can be more similar to another gene
    than to itself.

    Parameters
    ----------
    adata
        Annotated data; its ``var_names`` are gene symbols (subset it to the genes of interest first).
    go
        A :class:`~stpredict.io.GeneOntology`; default :func:`stpredict.datasets.gene_ontology` (the bundled
        human release).
    namespaces
        GO namespaces whose terms count: any of ``'BP'``, ``'MF'``, ``'CC'``.
    n_top
        The threshold of a gene is the mean of its ``n_top`` largest similarities (itself included).
    key_added
        ``varp[key_added]`` (dense similarity), ``varp[f'{key_added}_connectivities']`` (sparse gene graph)
        and ``uns[key_added]`` (parameters, GO release, unmatched genes).
    {copy}

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()[:, ["ERBB2", "GRB7", "EGFR", "ACTB", "KRT8"]].copy()
    >>> st.tl.gene_similarity(adata)
    >>> adata.varp["go_similarity"].shape, adata.uns["go_similarity"]["go_release"]
    ((5, 5), '2026-01-23')
    """
    check_adata(adata)
    if adata.n_vars > MAX_GENES:
        msg = (
            f"gene_similarity on {adata.n_vars} genes would hold a {adata.n_vars}x{adata.n_vars} matrix in "
            f"varp; subset to at most {MAX_GENES} genes first, e.g. adata[:, adata.var.highly_variable].copy()."
        )
        raise ValueError(msg)
    if go is None:
        from ..datasets import gene_ontology

        go = gene_ontology()
    started = time.perf_counter()
    genes = list(adata.var_names)
    similarity = go.similarity(genes, namespaces)
    graph = gene_graph(similarity, n_top=n_top)
    matched = go.match(genes)
    annotated = similarity.any(axis=1)
    unannotated = [g for g, ok in zip(genes, annotated, strict=True) if not ok]
    adata = adata.copy() if copy else adata
    adata.varp[key_added] = similarity
    adata.varp[f"{key_added}_connectivities"] = graph
    adata.uns[key_added] = {
        "namespaces": list(namespaces),
        "n_top": int(n_top),
        "go_release": str(go.source.get("go_release", "unknown")),
        "source": {k: str(v) for k, v in go.source.items()},
        "matched_by_alias": {g: s for g, s in matched.items() if s is not None and s != g},
        "unannotated": unannotated,
    }
    if unannotated:
        more = " ..." if len(unannotated) > 10 else ""
        warn(
            f"gene_similarity: {len(unannotated)} of {len(genes)} genes have no GO annotation in {namespaces} "
            f"and get no edges: {unannotated[:10]}{more}"
        )
    logger.info(
        "gene_similarity: added varp[%r] and varp[%r] (%d genes, %d edges, %.1f s)",
        key_added,
        f"{key_added}_connectivities",
        len(genes),
        graph.nnz,
        time.perf_counter() - started,
    )
    return adata if copy else None
