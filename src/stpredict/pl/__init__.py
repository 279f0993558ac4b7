"""Plots (``st.pl``)."""

from ._analyses import enrichment, regions, smoothing_histogram
from ._benchmark import benchmark
from ._correlation import gene_correlation
from ._graph import hierarchical_graph
from ._spatial import model_comparison, prediction, scores
from ._super_resolution import super_resolution
from ._tissue import tissue
from ._uncertainty import calibration_curve, ood

__all__ = [
    "benchmark",
    "calibration_curve",
    "enrichment",
    "gene_correlation",
    "hierarchical_graph",
    "model_comparison",
    "ood",
    "prediction",
    "regions",
    "scores",
    "smoothing_histogram",
    "super_resolution",
    "tissue",
]
