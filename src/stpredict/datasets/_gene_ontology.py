"""The Gene Ontology and gene annotations: a bundled human release, local files, or the official downloads."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib.resources import files
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .._logging import logger
from ..io._gene_ontology import GeneOntology, read_gene_ontology
from ._download import default_cache_dir, fetch

GO_CURRENT_URL = "https://current.geneontology.org/ontology/go-basic.obo"
GO_RELEASE_URL = "https://release.geneontology.org/{release}/ontology/go-basic.obo"
NCBI_GENE_URL = "https://ftp.ncbi.nlm.nih.gov/gene/DATA/"
#: NCBI gene_info file of each species with a gene_info download (taxon: path under GENE_INFO/)
GENE_INFO = {9606: "Mammalia/Homo_sapiens.gene_info.gz", 10090: "Mammalia/Mus_musculus.gene_info.gz"}
BUNDLED_RELEASE = {"go_release": "2026-01-23", "gene2go": "2026-03-18", "taxon": 9606}
_NAMESPACES = np.array(["BP", "MF", "CC"])
_RELATIONS = np.array(["is_a", "part_of"])


def gene_ontology(
    path: str | PathLike | None = None,
    *,
    download: bool = False,
    taxon: int = 9606,
    release: str = "current",
    gene_info: str | PathLike | None = None,
    known_hashes: dict[str, str] | None = None,
    cache_dir: str | PathLike | None = None,
    downloader: Callable | None = None,
) -> GeneOntology:
    """The Gene Ontology with a species' gene annotations, for :func:`stpredict.tl.gene_similarity` and M2TGLGO.

    Three sources:

    - default: the human release shipped with the package (GO 2026-01-23, NCBI gene2go 2026-03-18;
      CC BY 4.0), which works offline;
    - ``path=``: a folder with local copies: a GO OBO file (``*.obo``/``*.obo.gz``) or the tables
      ``go_terms.tsv*`` and ``go_edges.tsv*``; NCBI ``gene2go*`` or a ``*gene2go*.tsv*`` table; optionally
      a ``*gene_info*`` or ``*alias*`` table (or pass ``gene_info=``);
    - ``download=True``: ``go-basic.obo`` from geneontology.org (``release='current'`` or a date such as
      ``'2026-01-23'``) and NCBI's ``gene2go.gz`` and ``gene_info`` of ``taxon`` (9606 human, 10090 mouse),
      cached in ``cache_dir`` (see :func:`default_cache_dir`). These sources publish no checksums and
      their "current" files change with each release, so files are verified only against
      ``known_hashes`` (``{'go-basic.obo' | 'gene2go.gz' | '<species>.gene_info.gz': sha256}``; pooch
      logs each file's sha256 on its first download, so a dated release can be pinned); the release read
      is recorded in ``GeneOntology.source``.

    Returns
    -------
    A :class:`~stpredict.io.GeneOntology`.

    Examples
    --------
    >>> import stpredict as st
    >>> go = st.datasets.gene_ontology()
    >>> go.source["go_release"], len(go.terms) > 30000
    ('2026-01-23', True)
    >>> go.similarity(["ERBB2", "EGFR", "ACTB"]).round(2)  # doctest: +SKIP
    """
    if path is not None and download:
        msg = "Pass either path= (local copies) or download=True, not both."
        raise ValueError(msg)
    if path is not None:
        return _local(str(Path(path).resolve()), taxon, None if gene_info is None else str(Path(gene_info).resolve()))
    if download:
        hashes = tuple(sorted((known_hashes or {}).items()))
        return _downloaded(taxon, release, hashes, None if cache_dir is None else str(cache_dir), downloader)
    if taxon != BUNDLED_RELEASE["taxon"]:
        msg = (
            f"The bundled Gene Ontology annotates human genes (taxon 9606), not taxon {taxon}. Use "
            "download=True (needs internet) or path= to local copies of GO and NCBI gene2go/gene_info files."
        )
        raise ValueError(msg)
    return _bundled()


@lru_cache(maxsize=1)
def _bundled() -> GeneOntology:
    with np.load(Path(str(files("stpredict.datasets").joinpath("_data", "go_human", "go_human.npz")))) as z:
        term = pd.Index([f"GO:{t:07d}" for t in z["term"]])
        terms = pd.Series(_NAMESPACES[z["namespace"]], index=term, name="namespace")
        edges = pd.DataFrame(
            {
                "child": term[z["edge_child"]],
                "parent": term[z["edge_parent"]],
                "relation": _RELATIONS[z["edge_relation"]],
            }
        )
        annotations = pd.DataFrame({"symbol": z["symbol"][z["annotation_gene"]], "go_id": term[z["annotation_term"]]})
        aliases = pd.Series(z["alias_symbol"], index=z["alias"], name="symbol")
    source = {**BUNDLED_RELEASE, "licence": "CC BY 4.0 (GO); NCBI Gene public", "files": "bundled go_human.npz"}
    return GeneOntology(terms=terms, edges=edges, annotations=annotations, aliases=aliases, source=source)


def _find_one(root: Path, patterns: list[str], what: str, required: bool = True) -> Path | None:
    for pattern in patterns:
        hits = sorted(p for p in root.rglob(pattern) if p.is_file())
        if hits:
            return hits[0]
    if required:
        msg = f"No {what} under {str(root)!r} (looked for {patterns})."
        raise FileNotFoundError(msg)
    return None


@lru_cache(maxsize=4)
def _local(path: str, taxon: int, gene_info: str | None) -> GeneOntology:
    root = Path(path)
    obo = _find_one(root, ["*.obo", "*.obo.gz"], "GO OBO file", required=False)
    annotations = _find_one(root, ["gene2go", "gene2go.gz", "*gene2go*.tsv*"], "gene2go annotations")
    info = Path(gene_info) if gene_info else _find_one(root, ["*gene_info*", "*alias*"], "", required=False)
    if obo is not None:
        return read_gene_ontology(obo, annotations, gene_info=info, taxon=taxon)
    terms = _find_one(root, ["go_terms.tsv*"], "GO OBO file or go_terms.tsv table")
    edges = _find_one(root, ["go_edges.tsv*"], "go_edges.tsv table")
    return read_gene_ontology(terms, annotations, gene_info=info, taxon=taxon, go_edges=edges)


@lru_cache(maxsize=2)
def _downloaded(taxon: int, release: str, hashes: tuple, cache_dir, downloader) -> GeneOntology:
    if taxon not in GENE_INFO:
        msg = f"No NCBI gene_info download known for taxon {taxon}; known: {sorted(GENE_INFO)}. Use path= instead."
        raise ValueError(msg)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    url = GO_CURRENT_URL if release == "current" else GO_RELEASE_URL.format(release=release)
    known = dict(hashes)
    info_name = Path(GENE_INFO[taxon]).name
    obo = fetch(f"go/{release}/go-basic.obo", url, known.get("go-basic.obo"), cache_dir=cache, downloader=downloader)
    info_url = NCBI_GENE_URL + "GENE_INFO/" + GENE_INFO[taxon]
    info = fetch(f"go/ncbi/{info_name}", info_url, known.get(info_name), cache_dir=cache, downloader=downloader)
    gene2go_url = NCBI_GENE_URL + "gene2go.gz"
    gene2go = fetch("go/ncbi/gene2go.gz", gene2go_url, known.get("gene2go.gz"), cache_dir=cache, downloader=downloader)
    logger.info("gene_ontology: reading %s, %s and %s (taxon %d)", obo.name, gene2go.name, info.name, taxon)
    return read_gene_ontology(obo, gene2go, gene_info=info, taxon=taxon)
