"""Gene sets for enrichment: MSigDB Hallmark (bundled, or downloaded and verified), GO BP from the bundled GO, GMT files."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from importlib.resources import files
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from ._download import fetch

HALLMARK_FILE = "h.all.v2023.1.Hs.symbols.gmt"
HALLMARK_URL = "https://data.broadinstitute.org/gsea-msigdb/msigdb/release/2023.1.Hs/" + HALLMARK_FILE
HALLMARK_SHA256 = "27e48f776cda235ad5b63acaecc3136853ee79c6447d883ce2b070a4d2d47b75"


def read_gmt(path: str | PathLike) -> dict[str, list[str]]:
    """Gene sets of a GMT file (plain or gzipped): ``{name: genes}`` (the description column is dropped).

    Examples
    --------
    >>> import stpredict as st
    >>> sets = st.datasets.gene_sets("hallmark")
    >>> len(sets), len(sets["HALLMARK_E2F_TARGETS"])
    (50, 200)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    sets = {}
    with opener(path, "rt") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(fields) < 3:
                msg = f"{path.name}, line {number}: a GMT line is 'name<TAB>description<TAB>gene...'; got {len(fields)} field(s)."
                raise ValueError(msg)
            sets[fields[0]] = [g for g in fields[2:] if g]
    return sets


def go_bp_sets(min_size: int = 5, max_size: int = 2000) -> dict[str, list[str]]:
    """GO Biological Process gene sets of the bundled Gene Ontology, propagated up is_a and part_of."""
    from ._gene_ontology import gene_ontology

    go = gene_ontology()
    symbols = go.annotations["symbol"].unique()
    matrix, terms = go.annotation_matrix(symbols, ["BP"], propagate=True)
    csc = matrix.tocsc()
    sizes = np.diff(csc.indptr)
    keep = np.flatnonzero((sizes >= min_size) & (sizes <= max_size))
    return {terms[j]: list(symbols[csc.indices[csc.indptr[j] : csc.indptr[j + 1]]]) for j in keep}


def gene_sets(
    name: str = "hallmark",
    *,
    path: str | PathLike | None = None,
    download: bool = False,
    cache_dir: str | PathLike | None = None,
    downloader: Callable | None = None,
) -> dict[str, list[str]]:
    """Named gene sets for :func:`stpredict.tl.enrichment`.

    - ``'hallmark'``: MSigDB Hallmark 2023.1 (human symbols, CC BY 4.0), shipped with the package;
      ``download=True`` fetches the official file and verifies its sha256; ``path=`` reads a local copy.
    - ``'go_bp'``: GO Biological Process sets (5-2000 genes) derived from the bundled Gene Ontology
      (release 2026-01-23), annotations propagated up ``is_a`` and ``part_of``.

    Examples
    --------
    >>> import stpredict as st
    >>> "GO:0006915" in st.datasets.gene_sets("go_bp")  # apoptotic process
    True
    """
    if name == "hallmark":
        if path is not None:
            return read_gmt(path)
        if download:
            return read_gmt(
                fetch(
                    f"genesets/{HALLMARK_FILE}",
                    HALLMARK_URL,
                    HALLMARK_SHA256,
                    cache_dir=cache_dir,
                    downloader=downloader,
                )
            )
        return read_gmt(Path(str(files("stpredict.datasets").joinpath("_data", "genesets", HALLMARK_FILE))))
    if name == "go_bp":
        return go_bp_sets()
    msg = (
        f"Unknown gene set collection {name!r}: 'hallmark', 'go_bp', or pass a GMT path or a dict to st.tl.enrichment."
    )
    raise ValueError(msg)


def as_gene_sets(source: str | PathLike | dict) -> dict[str, list[str]]:
    """Gene sets from a collection name, a GMT path or a ``{name: genes}`` mapping."""
    if isinstance(source, dict):
        return {str(k): [str(g) for g in v] for k, v in source.items()}
    if isinstance(source, str) and source in ("hallmark", "go_bp"):
        return gene_sets(source)
    path = Path(source)
    if not path.exists():
        msg = f"Gene sets {str(source)!r}: neither 'hallmark', 'go_bp', an existing GMT file nor a dict."
        raise FileNotFoundError(msg)
    return read_gmt(path)


def gene_set_table(sets: dict[str, list[str]]) -> pd.DataFrame:
    """Long format ``set, gene`` (unique pairs)."""
    rows = [(name, gene) for name, genes in sets.items() for gene in genes]
    return pd.DataFrame(rows, columns=["set", "gene"]).drop_duplicates()
