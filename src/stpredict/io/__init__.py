"""Reading slides into AnnData (``st.io``)."""

from ._concat import concat
from ._cosmx import read_cosmx
from ._export import to_spatialdata
from ._gene_ontology import GeneOntology, gene_graph, read_gene_ontology
from ._hest import read_hest
from ._image import load_slide_image, source_image_path
from ._labels import read_pathologist_labels
from ._read_wsi import read_wsi
from ._spatialdata import read_spatialdata
from ._st import read_st
from ._tissue import detect_tissue
from ._visium import read_visium
from ._visium_hd import read_visium_hd
from ._wsi import WholeSlide, is_wsi, write_pyramidal_tiff
from ._xenium import read_xenium

__all__ = [
    "GeneOntology",
    "WholeSlide",
    "concat",
    "detect_tissue",
    "gene_graph",
    "is_wsi",
    "read_cosmx",
    "read_gene_ontology",
    "read_hest",
    "read_pathologist_labels",
    "load_slide_image",
    "read_spatialdata",
    "read_st",
    "read_visium",
    "read_visium_hd",
    "read_wsi",
    "read_xenium",
    "source_image_path",
    "to_spatialdata",
    "write_pyramidal_tiff",
]
