"""The Gene Ontology with gene annotations: readers, and the gene-gene similarity of M2TGLGO (Eq. 10-12).

Term similarity ``b = |shared ancestors| / max(depth)`` within one namespace (0 across namespaces), where
ancestors are the strict ancestors over ``is_a`` and ``part_of`` and depth is the longest path from the
namespace's root (root = 0, as goatools' ``depth``); gene similarity is the mean of ``b`` over all pairs
of the two genes' terms. Everything is sparse matrix algebra over terms: no Python loop over term pairs.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

NAMESPACES = {"biological_process": "BP", "molecular_function": "MF", "cellular_component": "CC"}
ANCESTOR_RELATIONS = ("is_a", "part_of")
#: evidence codes whose annotations carry no knowledge about the gene ("no biological data available")
EXCLUDED_EVIDENCE = ("ND",)
_BLOCK = 2048  # terms per block of the term x term similarity (memory O(block x terms))


@dataclass(frozen=True)
class GeneOntology:
    """The GO graph and the genes' GO terms, ready for :meth:`similarity`.

    Attributes
    ----------
    terms
        Live terms: ``go_id`` -> namespace (``'BP'``, ``'MF'``, ``'CC'``).
    edges
        ``child``, ``parent``, ``relation`` (``is_a`` or ``part_of``), both ends in ``terms``.
    annotations
        Direct (unpropagated) annotations: ``symbol``, ``go_id``.
    aliases
        Previous symbols and synonyms -> current symbol (an alias may name several genes), or ``None``; a
        gene is matched through an alias that names a single annotated gene.
    source
        Where the data come from (files, release dates, licence).

    Examples
    --------
    >>> import pandas as pd
    >>> from stpredict.io import GeneOntology
    >>> go = GeneOntology(
    ...     terms=pd.Series({"GO:1": "BP", "GO:2": "BP", "GO:3": "BP"}),
    ...     edges=pd.DataFrame({"child": ["GO:2", "GO:3"], "parent": ["GO:1", "GO:2"], "relation": "is_a"}),
    ...     annotations=pd.DataFrame({"symbol": ["A", "B"], "go_id": ["GO:3", "GO:3"]}),
    ... )
    >>> go.similarity(["A", "B", "C"]).round(2).tolist()  # GO:3 has 2 ancestors at depth 2; C: no terms
    [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """

    terms: pd.Series
    edges: pd.DataFrame
    annotations: pd.DataFrame
    aliases: pd.Series | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = {"child", "parent", "relation"} - set(self.edges.columns)
        missing |= {"symbol", "go_id"} - set(self.annotations.columns)
        if missing:
            msg = f"GeneOntology needs edges (child, parent, relation) and annotations (symbol, go_id); missing {sorted(missing)}."
            raise ValueError(msg)
        unknown = set(self.terms.unique()) - set(NAMESPACES.values())
        if unknown:
            msg = f"Term namespaces must be 'BP', 'MF' or 'CC'; got {sorted(unknown)}."
            raise ValueError(msg)

    def __repr__(self) -> str:
        release = self.source.get("go_release", "unknown release")
        return (
            f"GeneOntology({len(self.terms)} terms, {len(self.edges)} is_a/part_of edges, "
            f"{self.annotations['symbol'].nunique()} annotated genes; GO {release})"
        )

    @cached_property
    def _term_index(self) -> pd.Index:
        return pd.Index(self.terms.index)

    @cached_property
    def _parents(self) -> sp.csr_matrix:
        """``(terms, terms)`` binary: ``[child, parent] = 1`` over the ancestor relations."""
        kept = self.edges[self.edges["relation"].isin(ANCESTOR_RELATIONS)]
        child = self._term_index.get_indexer(kept["child"])
        parent = self._term_index.get_indexer(kept["parent"])
        ok = (child >= 0) & (parent >= 0)
        n = len(self._term_index)
        matrix = sp.csr_matrix((np.ones(ok.sum(), dtype=np.float32), (child[ok], parent[ok])), shape=(n, n))
        matrix.data[:] = 1.0  # duplicate edges (is_a and part_of to the same parent) count once
        return matrix

    @cached_property
    def depth(self) -> pd.Series:
        """Longest path from the root of each term's namespace (roots: 0)."""
        coo = self._parents.tocoo()
        depth = np.zeros(self._parents.shape[0], dtype=np.int64)
        for _ in range(depth.size):  # relaxation converges after (longest path) rounds; a DAG guarantees it
            updated = depth.copy()
            np.maximum.at(updated, coo.row, depth[coo.col] + 1)
            if np.array_equal(updated, depth):
                break
            depth = updated
        else:
            msg = "The GO graph has a cycle over is_a/part_of: not a valid ontology."
            raise ValueError(msg)
        return pd.Series(depth, index=self._term_index, name="depth")

    def ancestors(self, term_ids: Sequence[str]) -> sp.csr_matrix:
        """``(len(term_ids), n_terms)`` binary matrix of each term's strict ancestors (is_a, part_of)."""
        rows = self._term_index.get_indexer(list(term_ids))
        if (rows < 0).any():
            missing = [t for t, r in zip(term_ids, rows, strict=True) if r < 0][:5]
            msg = f"Unknown GO terms {missing}."
            raise KeyError(msg)
        reached = self._parents[rows]
        while True:  # transitive closure: add the parents of everything reached until nothing new appears
            grown = reached + reached @ self._parents
            grown.data[:] = 1.0
            if grown.nnz == reached.nnz:
                return grown.tocsr()
            reached = grown

    def match(self, genes: Sequence[str]) -> pd.Series:
        """The annotated symbol of each gene: itself, else the current symbol it is an alias of, else ``None``.

        Examples
        --------
        >>> import stpredict as st
        >>> st.datasets.gene_ontology().match(["ERBB2", "FAM132A", "NOT_A_GENE"]).tolist()
        ['ERBB2', 'C1QTNF12', None]
        """
        annotated = pd.Index(self.annotations["symbol"].unique())
        genes = pd.Index([str(g) for g in genes])
        matched = pd.Series(np.where(genes.isin(annotated), genes, None), index=genes, dtype=object)
        if self.aliases is not None:
            # an alias is used when it names exactly one annotated gene (NDUFA4 -> COXFA4, not its pseudogene)
            candidates = self.aliases[self.aliases.isin(annotated)]
            unique = candidates[~candidates.index.duplicated(keep=False)]
            missing = matched.isna().to_numpy()
            current = genes[missing].map(unique.to_dict())
            usable = pd.Index(current).isin(annotated)
            matched.iloc[np.flatnonzero(missing)[usable]] = np.asarray(current)[usable]
        return matched

    def annotation_matrix(
        self, genes: Sequence[str], namespaces: Sequence[str] = ("BP", "MF", "CC"), *, propagate: bool = False
    ) -> tuple[sp.csr_matrix, pd.Index]:
        """``(genes, terms)`` binary matrix of the genes' GO terms in ``namespaces`` and those terms' ids.

        ``propagate=True`` adds every ancestor of each term (the columns then span them too).
        """
        namespaces = _check_namespaces(namespaces)
        symbols = self.match(genes)
        table = self.annotations[self.annotations["go_id"].map(self.terms).isin(namespaces)]
        rows_of_genes = pd.DataFrame({"row": np.arange(len(symbols)), "symbol": symbols.to_numpy()}).dropna()
        table = table.merge(rows_of_genes, on="symbol")  # a symbol named twice (alias and current) fills both rows
        columns = pd.Index(pd.unique(table["go_id"]))
        matrix = sp.csr_matrix(
            (np.ones(len(table), dtype=np.float32), (table["row"].to_numpy(), columns.get_indexer(table["go_id"]))),
            shape=(len(symbols), len(columns)),
        )
        matrix.data[:] = 1.0  # a term annotated with several evidence codes counts once
        if propagate and len(columns):
            closure = self.ancestors(columns) + sp.csr_matrix(
                (
                    np.ones(len(columns), dtype=np.float32),
                    (np.arange(len(columns)), self._term_index.get_indexer(columns)),
                ),
                shape=(len(columns), len(self._term_index)),
            )
            full = (matrix @ closure).tocsc()
            used = np.flatnonzero(full.getnnz(axis=0))
            matrix = full[:, used].tocsr()
            matrix.data[:] = 1.0
            columns = self._term_index[used]
        return matrix, columns

    def similarity(self, genes: Sequence[str], namespaces: Sequence[str] = ("BP", "MF", "CC")) -> np.ndarray:
        """``(genes, genes)`` GO similarity (M2TGLGO's Eq. 10-12); genes without terms have 0 everywhere."""
        annotation, columns = self.annotation_matrix(genes, namespaces)
        n_genes = annotation.shape[0]
        total = np.zeros((n_genes, n_genes), dtype=np.float64)
        if len(columns):
            ancestors = self.ancestors(columns)
            depth = self.depth.reindex(columns).to_numpy(dtype=np.float64)
            namespace = self.terms.reindex(columns).to_numpy()
            for start in range(0, len(columns), _BLOCK):
                block = slice(start, start + _BLOCK)
                shared = (ancestors[block] @ ancestors.T).toarray()
                deepest = np.maximum(depth[block, None], depth[None, :])
                term_similarity = np.divide(shared, deepest, out=np.zeros_like(shared), where=deepest > 0)
                term_similarity[namespace[block, None] != namespace[None, :]] = 0.0
                # sum over the genes' term pairs: G[:, block] · b · Gᵀ
                left = annotation[:, block] @ term_similarity  # (genes, terms), dense
                total += (annotation @ left.T).T
        n_terms = np.asarray(annotation.sum(axis=1)).ravel()
        pairs = np.outer(n_terms, n_terms)
        return np.divide(total, pairs, out=np.zeros_like(total), where=pairs > 0).astype(np.float32)


def gene_graph(similarity: np.ndarray, n_top: int = 10) -> sp.csr_matrix:
    """M2TGLGO's thresholded gene graph from a GO similarity matrix ``S``.

    ``A[i, j] = 1`` where ``S[i, j]`` exceeds gene ``i``'s mean of its ``n_top`` largest similarities (its
    row, itself included). Genes without annotation get no edges.

    Examples
    --------
    >>> import numpy as np
    >>> from stpredict.io import gene_graph
    >>> S = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.2], [0.1, 0.2, 0.3]])
    >>> gene_graph(S, n_top=2).toarray().astype(int).tolist()
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    top = min(int(n_top), similarity.shape[1])
    if top < 1:
        msg = f"n_top must be a positive integer, got {n_top!r}."
        raise ValueError(msg)
    threshold = -np.sort(-similarity, axis=1)[:, :top].mean(axis=1)
    adjacency = (similarity > threshold[:, None]) & (similarity > 0)
    return sp.csr_matrix(adjacency.astype(np.float32))


def _check_namespaces(namespaces: Sequence[str]) -> list[str]:
    namespaces = [namespaces] if isinstance(namespaces, str) else list(namespaces)
    unknown = sorted(set(namespaces) - set(NAMESPACES.values()))
    if unknown or not namespaces:
        msg = f"namespaces must be a non-empty subset of ('BP', 'MF', 'CC'); got {namespaces!r}."
        raise ValueError(msg)
    return namespaces


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else path.open()


def _first_line(path: Path) -> str:
    with _open_text(path) as handle:
        for line in handle:
            if not line.startswith("# source") and line.strip():
                return line
    return ""


def read_obo(path: str | PathLike) -> tuple[pd.Series, pd.DataFrame, dict[str, Any]]:
    """Live terms (``go_id`` -> namespace), their is_a/part_of edges and the release of a GO OBO file.

    Parsed with ``obonet`` (plain or gzipped ``go-basic.obo``); obsolete terms are left out.
    """
    import obonet

    graph = obonet.read_obo(str(path))
    terms = pd.Series(
        {node: NAMESPACES.get(data.get("namespace"), data.get("namespace")) for node, data in graph.nodes(data=True)},
        name="namespace",
    )
    terms = terms[terms.isin(list(NAMESPACES.values()))]
    edges = pd.DataFrame(list(graph.edges(keys=True)), columns=["child", "parent", "relation"])
    edges = edges[edges["relation"].isin(ANCESTOR_RELATIONS)].reset_index(drop=True)
    release = str(graph.graph.get("data-version", "unknown")).removeprefix("releases/")
    return terms, edges, {"go_file": str(path), "go_release": release}


def read_go_tables(terms_path: str | PathLike, edges_path: str | PathLike) -> tuple[pd.Series, pd.DataFrame]:
    """Terms and edges from tab-separated tables (``go_id, namespace[, is_obsolete]`` and ``child, parent, relation``)."""
    terms = pd.read_csv(terms_path, sep="\t", comment=None)
    if "is_obsolete" in terms:
        terms = terms[terms["is_obsolete"].astype(int) == 0]
    terms = pd.Series(terms["namespace"].replace(NAMESPACES).to_numpy(), index=terms["go_id"], name="namespace")
    edges = pd.read_csv(edges_path, sep="\t")
    edges = edges[edges["relation"].isin(ANCESTOR_RELATIONS)][["child", "parent", "relation"]].reset_index(drop=True)
    return terms, edges


def read_gene_info(path: str | PathLike) -> tuple[pd.Series, pd.Series]:
    """NCBI ``gene_info`` (or an ``entrez_id, symbol, alias`` table): GeneID -> symbol, and alias -> symbol.

    An alias may name several genes (one row each); aliases equal to some gene's current symbol are dropped.
    """
    path = Path(path)
    header = _first_line(path).lstrip("#").rstrip("\n").split("\t")
    if "Synonyms" in header:  # NCBI gene_info
        table = pd.read_csv(path, sep="\t", usecols=["GeneID", "Symbol", "Synonyms"], dtype=str)
        table.columns = ["entrez_id", "symbol", "alias"]
        table["alias"] = table["alias"].str.split("|")
        table = table.explode("alias")
    else:  # entrez_id, symbol, alias
        table = pd.read_csv(path, sep="\t", comment="#", dtype=str)
    symbols = pd.Series(table.drop_duplicates("entrez_id").set_index("entrez_id")["symbol"], name="symbol")
    table = table[table["alias"].notna() & (table["alias"] != "-")]
    pairs = table[["alias", "symbol"]].drop_duplicates()
    pairs = pairs[~pairs["alias"].isin(set(symbols))]
    return symbols, pd.Series(pairs["symbol"].to_numpy(), index=pairs["alias"].to_numpy(), name="symbol")


def read_gene2go(
    path: str | PathLike, *, taxon: int = 9606, symbols: pd.Series | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Direct annotations ``symbol, go_id`` of one species from NCBI ``gene2go`` (or a ``symbol, go_id`` table).

    NCBI's file keys genes by GeneID: ``symbols`` (GeneID -> symbol, from :func:`read_gene_info`) names them.
    ``NOT``-qualified annotations and those with evidence ``ND`` (no biological data) are left out. The
    all-species NCBI file is read in chunks, keeping ``taxon``'s rows only.
    """
    path = Path(path)
    header = _first_line(path).lstrip("#").rstrip("\n").split("\t")
    if "GO_ID" in header:  # NCBI gene2go: tax_id GeneID GO_ID Evidence Qualifier GO_term PubMed Category
        if symbols is None:
            msg = f"{path.name} keys genes by NCBI GeneID: pass the species' gene_info file to name them."
            raise ValueError(msg)
        columns = ["#tax_id", "GeneID", "GO_ID", "Evidence", "Qualifier"]
        parts = []
        for chunk in pd.read_csv(path, sep="\t", usecols=columns, dtype=str, chunksize=1_000_000):
            chunk = chunk[chunk["#tax_id"] == str(taxon)]
            chunk = chunk[~chunk["Qualifier"].fillna("").str.startswith("NOT")]
            parts.append(chunk)
        table = pd.concat(parts, ignore_index=True)
        table = pd.DataFrame(
            {"symbol": table["GeneID"].map(symbols), "go_id": table["GO_ID"], "evidence": table["Evidence"]}
        ).dropna(subset=["symbol"])
    else:  # symbol, go_id[, evidence] (e.g. the Bioconductor org.Hs.eg.db export)
        table = pd.read_csv(path, sep="\t", comment="#", dtype=str)
    if "evidence" in table:
        table = table[~table["evidence"].isin(EXCLUDED_EVIDENCE)]
    annotations = table[["symbol", "go_id"]].drop_duplicates().reset_index(drop=True)
    return annotations, {"annotation_file": str(path), "taxon": taxon}


def read_gene_ontology(
    go: str | PathLike,
    annotations: str | PathLike,
    *,
    gene_info: str | PathLike | None = None,
    taxon: int = 9606,
    go_edges: str | PathLike | None = None,
) -> GeneOntology:
    """A :class:`GeneOntology` from the standard files.

    Parameters
    ----------
    go
        ``go-basic.obo`` (plain or gzipped), or a terms table (``go_id, namespace``) with ``go_edges``.
    annotations
        NCBI ``gene2go`` (all species; ``taxon`` is kept) or a ``symbol, go_id`` table.
    gene_info
        NCBI ``gene_info`` of the species (or an ``entrez_id, symbol, alias`` table): names NCBI's GeneIDs
        and maps previous symbols to current ones.
    taxon
        NCBI taxonomy id (9606: human).
    go_edges
        ``child, parent, relation`` table, when ``go`` is a terms table.

    Examples
    --------
    >>> import stpredict as st
    >>> go = st.io.read_gene_ontology("go-basic.obo.gz", "gene2go.gz", gene_info="Homo_sapiens.gene_info.gz")  # doctest: +SKIP
    """
    go, annotations = Path(go), Path(annotations)
    if go_edges is not None:
        terms, edges = read_go_tables(go, go_edges)
        source = {"go_file": str(go), "go_release": "unknown"}
    else:
        terms, edges, source = read_obo(go)
    symbols, aliases = read_gene_info(gene_info) if gene_info is not None else (None, None)
    table, annotation_source = read_gene2go(annotations, taxon=taxon, symbols=symbols)
    return GeneOntology(
        terms=terms, edges=edges, annotations=table, aliases=aliases, source={**source, **annotation_source}
    )
