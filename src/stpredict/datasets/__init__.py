"""Bundled and downloadable data sets (``st.datasets``)."""

from ._bundled import her2st_crop, her2st_crop_files, her2st_crop_provenance
from ._download import default_cache_dir, fetch, her2st, mob, visium_breast_cancer
from ._gene_ontology import gene_ontology
from ._gene_sets import gene_sets, read_gmt
from ._hest import HestSelection, hest
from ._visium_hd_example import visium_hd_example

__all__ = [
    "HestSelection",
    "default_cache_dir",
    "fetch",
    "gene_ontology",
    "gene_sets",
    "her2st",
    "her2st_crop",
    "her2st_crop_files",
    "her2st_crop_provenance",
    "hest",
    "mob",
    "read_gmt",
    "visium_breast_cancer",
    "visium_hd_example",
]
