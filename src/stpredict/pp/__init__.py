"""Preprocessing: targets (normalisation, gene selection, smoothing) and image features (``st.pp``)."""

from ._encoders import ENCODERS, load_encoder
from ._features import handcrafted_feature_names, handcrafted_features, image_features
from ._genes import select_genes
from ._graph import spatial_graph
from ._hierarchical import hierarchical_graph  # MERGE's graph, a preprocessing step
from ._normalize import gene_lengths, normalize
from ._nuclei import nuclei_feature_names, nuclei_features, segment_nuclei
from ._patches import extract_patches
from ._pseudo_spots import pseudo_spots
from ._smooth import smooth
from ._stain import estimate_stain, normalize_stain, stain_reference
from ._views import (
    SpotPatchDataset,
    iter_neighbour_views,
    neighbour_features,
    neighbour_tiles,
)

__all__ = [
    "ENCODERS",
    "load_encoder",
    "SpotPatchDataset",
    "estimate_stain",
    "extract_patches",
    "gene_lengths",
    "handcrafted_feature_names",
    "handcrafted_features",
    "hierarchical_graph",
    "image_features",
    "iter_neighbour_views",
    "neighbour_features",
    "neighbour_tiles",
    "normalize",
    "normalize_stain",
    "pseudo_spots",
    "nuclei_feature_names",
    "nuclei_features",
    "segment_nuclei",
    "select_genes",
    "smooth",
    "spatial_graph",
    "stain_reference",
]
