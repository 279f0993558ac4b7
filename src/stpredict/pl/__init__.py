"""Plots (``st.pl``)."""

from ._correlation import gene_correlation
from ._graph import hierarchical_graph
from ._spatial import prediction, scores

__all__ = ["gene_correlation", "hierarchical_graph", "prediction", "scores"]
