"""Reading slides into AnnData (``st.io``)."""

from ._concat import concat
from ._gene_ontology import GeneOntology, gene_graph, read_gene_ontology
from ._image import load_slide_image, source_image_path
from ._labels import read_pathologist_labels
from ._spatialdata import read_spatialdata
from ._st import read_st
from ._visium import read_visium

__all__ = [
    "GeneOntology",
    "concat",
    "gene_graph",
    "read_gene_ontology",
    "read_pathologist_labels",
    "load_slide_image",
    "read_spatialdata",
    "read_st",
    "read_visium",
    "source_image_path",
]
