"""Plots (``st.pl``)."""

from ._graph import hierarchical_graph
from ._spatial import prediction, scores

__all__ = ["hierarchical_graph", "prediction", "scores"]
