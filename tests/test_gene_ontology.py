"""Gene Ontology: readers, the bundled release, GO similarity (M2TGLGO Eq. 10-12) and the thresholded gene graph."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pandas as pd
import pytest

import stpredict as st
from stpredict.io import GeneOntology, gene_graph


@pytest.fixture
def toy_go():
    """BP: R <- A, R <- B, A <- C, A <- D, B <-(part_of) D; MF: E <- F.  Genes g1 {C, F}, g2 {D}, g3 {C, D}."""
    terms = pd.Series({"R": "BP", "A": "BP", "B": "BP", "C": "BP", "D": "BP", "E": "MF", "F": "MF"})
    edges = pd.DataFrame(
        [
            ("A", "R", "is_a"),
            ("B", "R", "is_a"),
            ("C", "A", "is_a"),
            ("D", "A", "is_a"),
            ("D", "B", "part_of"),
            ("F", "E", "is_a"),
        ],
        columns=["child", "parent", "relation"],
    )
    annotations = pd.DataFrame(
        [("g1", "C"), ("g1", "F"), ("g2", "D"), ("g3", "C"), ("g3", "D"), ("g3", "D")], columns=["symbol", "go_id"]
    )
    return GeneOntology(terms=terms, edges=edges, annotations=annotations, aliases=pd.Series({"old3": "g3"}))


def test_toy_similarity_equals_hand_computation(toy_go):
    # strict ancestors: C {A, R}, D {A, B, R}, F {E}; longest-path depth: C 2, D 2, F 1
    # b(C,C) = 2/2, b(C,D) = 2/2, b(D,D) = 3/2, b(F,F) = 1/1, across namespaces 0
    assert toy_go.depth.to_dict() == {"R": 0, "A": 1, "B": 1, "C": 2, "D": 2, "E": 0, "F": 1}
    expected = np.array(
        [
            [(1 + 0 + 0 + 1) / 4, (1 + 0) / 2, (1 + 1 + 0 + 0) / 4],
            [(1 + 0) / 2, 1.5, (1 + 1.5) / 2],
            [(1 + 1 + 0 + 0) / 4, (1 + 1.5) / 2, (1 + 1 + 1 + 1.5) / 4],
        ]
    )
    np.testing.assert_allclose(toy_go.similarity(["g1", "g2", "g3"]), expected, rtol=1e-6)
    # an alias is matched to its current symbol; an unknown gene has no terms and similarity 0
    np.testing.assert_allclose(toy_go.similarity(["old3", "nobody"]), [[1.125, 0], [0, 0]], rtol=1e-6)


def test_namespaces_do_not_mix(toy_go):
    # g1's MF term F meets no BP term: restricted to MF, g1 is similar only to itself
    np.testing.assert_allclose(toy_go.similarity(["g1", "g2"], namespaces=["MF"]), [[1.0, 0.0], [0.0, 0.0]])
    bp = toy_go.similarity(["g1", "g2"], namespaces=["BP"])
    assert bp[0, 0] == pytest.approx(1.0) and bp[0, 1] == pytest.approx(1.0)  # g1 = {C} in BP
    with pytest.raises(ValueError, match="subset of"):
        toy_go.similarity(["g1"], namespaces=["XX"])


def test_self_similarity_is_row_maximum_for_single_term_genes(toy_go):
    go = GeneOntology(toy_go.terms, toy_go.edges, pd.DataFrame({"symbol": list("abcdef"), "go_id": list("ABCDEF")}))
    similarity = go.similarity(list("abcdef"))
    annotated = similarity.any(axis=1)
    np.testing.assert_allclose(np.diag(similarity)[annotated], similarity[annotated].max(axis=1))
    # Eq. 10 averages over all term pairs: a gene with mixed terms can be closer to another gene (g3 vs g2)
    mixed = toy_go.similarity(["g2", "g3"])
    assert mixed[1, 0] > mixed[1, 1]


def test_threshold_rule_gives_hand_computed_graph(toy_go):
    similarity = toy_go.similarity(["g1", "g2", "g3"])
    # n_top=2: thresholds g1 (0.5+0.5)/2, g2 (1.5+1.25)/2, g3 (1.25+1.125)/2; an edge needs S > threshold
    np.testing.assert_array_equal(gene_graph(similarity, n_top=2).toarray(), [[0, 0, 0], [0, 1, 0], [0, 1, 0]])
    assert gene_graph(np.zeros((2, 2))).nnz == 0  # genes without annotation get no edges


def test_bundled_release_and_alias_matching():
    go = st.datasets.gene_ontology()
    assert go.source["go_release"] == "2026-01-23" and len(go.terms) == 38739
    assert go.match(["ERBB2", "FAM132A", "NDUFA4", "HN1", "NOT_A_GENE"]).tolist() == [
        "ERBB2",
        "C1QTNF12",  # previous symbol
        "COXFA4",  # its other alias target is an unannotated pseudogene
        None,  # names two annotated genes: ambiguous
        None,
    ]
    with pytest.raises(ValueError, match="human genes"):
        st.datasets.gene_ontology(taxon=10090)


def test_gene_similarity_on_250_genes_is_fast_and_writes_varp(crop_norm, caplog):
    st.pp.select_genes(crop_norm, n_genes=250)
    adata = crop_norm[:, crop_norm.uns["selected"]["genes"]].copy()
    started = time.perf_counter()
    out = st.tl.gene_similarity(adata, copy=True)
    assert time.perf_counter() - started < 10
    assert "go_similarity" not in adata.varp  # copy=True leaves the input alone
    similarity = out.varp["go_similarity"]
    assert similarity.shape == (250, 250) and np.allclose(similarity, similarity.T)
    graph = out.varp["go_similarity_connectivities"]
    unannotated = out.uns["go_similarity"]["unannotated"]
    rows = out.var_names.get_indexer(unannotated)
    assert graph[rows].nnz == 0 and graph[:, rows].nnz == 0
    assert 0 < len(unannotated) < 25


def test_gene_similarity_refuses_huge_gene_sets(crop_norm):
    with pytest.raises(ValueError, match="subset to at most"):
        st.tl.gene_similarity(crop_norm)


def _write_gz(path, text):
    with gzip.open(path, "wt") as handle:
        handle.write(text)


@pytest.fixture
def ncbi_files(tmp_path):
    """Tiny files in the official formats: go-basic.obo, NCBI gene2go (two species) and gene_info."""
    obo = """format-version: 1.2
data-version: releases/2026-01-23

[Term]
id: GO:0000001
name: root process
namespace: biological_process

[Term]
id: GO:0000002
name: child process
namespace: biological_process
is_a: GO:0000001 ! root process

[Term]
id: GO:0000003
name: part process
namespace: biological_process
relationship: part_of GO:0000002 ! child process
relationship: regulates GO:0000001 ! root process

[Term]
id: GO:0000009
name: gone
namespace: biological_process
is_obsolete: true
"""
    (tmp_path / "go-basic.obo").write_text(obo)
    _write_gz(
        tmp_path / "gene2go.gz",
        "#tax_id\tGeneID\tGO_ID\tEvidence\tQualifier\tGO_term\tPubMed\tCategory\n"
        "9606\t1\tGO:0000003\tIDA\tinvolved_in\tpart process\t-\tProcess\n"
        "9606\t2\tGO:0000002\tIEA\tinvolved_in\tchild process\t-\tProcess\n"
        "9606\t2\tGO:0000003\tIDA\tNOT involved_in\tpart process\t-\tProcess\n"
        "9606\t3\tGO:0000001\tND\tinvolved_in\troot process\t-\tProcess\n"
        "10090\t9\tGO:0000003\tIDA\tinvolved_in\tpart process\t-\tProcess\n",
    )
    _write_gz(
        tmp_path / "Homo_sapiens.gene_info.gz",
        "#tax_id\tGeneID\tSymbol\tLocusTag\tSynonyms\n9606\t1\tAAA1\t-\tOLDA|X1\n9606\t2\tBBB2\t-\t-\n9606\t3\tCCC3\t-\tX1\n",
    )
    return tmp_path


def test_reads_the_official_formats(ncbi_files):
    go = st.datasets.gene_ontology(path=ncbi_files)
    assert go.source["go_release"] == "2026-01-23"
    assert sorted(go.terms.index) == ["GO:0000001", "GO:0000002", "GO:0000003"]  # obsolete left out
    assert set(go.edges["relation"]) == {"is_a", "part_of"}  # regulates is not an ancestor relation
    # NOT-qualified, ND-evidence and other species' annotations are left out
    assert sorted(map(tuple, go.annotations.to_numpy())) == [("AAA1", "GO:0000003"), ("BBB2", "GO:0000002")]
    # X1 names AAA1 and CCC3, but only AAA1 is annotated (CCC3's only annotation has evidence ND)
    assert go.match(["OLDA", "X1", "CCC3"]).tolist() == ["AAA1", "AAA1", None]
    # AAA1's term (depth 2) shares GO:0000001 and GO:0000002 with itself: 2/2; with BBB2's term: 1/2
    np.testing.assert_allclose(go.similarity(["AAA1", "BBB2"]), [[1.0, 0.5], [0.5, 1.0]])


def test_download_fetches_official_files_and_says_when_offline(ncbi_files, tmp_path):
    fetched = []

    def local_copy(url, output_file, pooch):  # a pooch downloader serving the tiny files
        name = {"go-basic.obo": "go-basic.obo", "gene2go.gz": "gene2go.gz"}.get(
            url.rsplit("/", 1)[-1], "Homo_sapiens.gene_info.gz"
        )
        fetched.append(url)
        output = output_file if isinstance(output_file, str) else output_file.name
        with open(ncbi_files / name, "rb") as source, open(output, "wb") as target:
            target.write(source.read())

    go = st.datasets.gene_ontology(download=True, cache_dir=tmp_path / "cache", downloader=local_copy)
    assert len(go.annotations) == 2
    assert any("geneontology.org" in u for u in fetched) and any("ncbi.nlm.nih.gov" in u for u in fetched)

    with pytest.raises(ValueError, match="Checksum mismatch"):  # a pinned release is verified
        st.datasets.gene_ontology(
            download=True,
            release="2026-01-23",
            known_hashes={"go-basic.obo": "0" * 64},
            cache_dir=tmp_path / "pinned",
            downloader=local_copy,
        )

    def offline(url, output_file, pooch):
        raise OSError("no network")

    with pytest.raises(ConnectionError, match="path="):
        st.datasets.gene_ontology(download=True, release="2020-01-01", cache_dir=tmp_path / "empty", downloader=offline)
