"""Build the compact human Gene Ontology shipped in the package (``st.datasets.gene_ontology()`` offline).

Reads the GO DAG and the human NCBI gene2go annotations (Bioconductor GO.db / org.Hs.eg.db 3.23.1 exports,
GO release 2026-01-23, gene2go 2026-03-18) and the NCBI alias table, and keeps what the GO similarity needs:
live terms with their namespace, is_a/part_of edges, direct annotations (symbol, term; evidence ND left
out) and unambiguous aliases. Usage::

    python tools/make_go_bundle.py ../shared/data/genes
"""

import sys
from pathlib import Path

import numpy as np

from stpredict.io._gene_ontology import read_gene2go, read_gene_info, read_go_tables

NAMESPACE_CODES = {"BP": 0, "MF": 1, "CC": 2}
RELATION_CODES = {"is_a": 0, "part_of": 1}


def main(genes_dir: Path, out: Path) -> None:
    go = genes_dir / "go"
    terms, edges = read_go_tables(go / "go_terms.tsv.gz", go / "go_edges.tsv.gz")
    annotations, _ = read_gene2go(go / "human_gene2go.tsv.gz")
    _, aliases = read_gene_info(genes_dir / "gene_length" / "ncbi_human_alias_to_symbol.tsv.gz")
    annotations = annotations[annotations["go_id"].isin(terms.index)]
    term_index = terms.index
    symbols = np.array(sorted(annotations["symbol"].unique()))
    aliases = aliases[aliases.isin(set(symbols))]
    np.savez_compressed(
        out / "go_human.npz",
        term=term_index.str.removeprefix("GO:").astype(np.int32).to_numpy(),
        namespace=terms.map(NAMESPACE_CODES).to_numpy(np.int8),
        edge_child=term_index.get_indexer(edges["child"]).astype(np.int32),
        edge_parent=term_index.get_indexer(edges["parent"]).astype(np.int32),
        edge_relation=edges["relation"].map(RELATION_CODES).to_numpy(np.int8),
        symbol=symbols,
        annotation_gene=np.searchsorted(symbols, annotations["symbol"].to_numpy()).astype(np.int32),
        annotation_term=term_index.get_indexer(annotations["go_id"]).astype(np.int32),
        alias=aliases.index.to_numpy(dtype=str),
        alias_symbol=aliases.to_numpy(dtype=str),
    )
    print(
        f"{len(terms)} terms, {len(edges)} edges, {len(annotations)} annotations of {len(symbols)} genes, {len(aliases)} aliases"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "src/stpredict/datasets/_data/go_human")
