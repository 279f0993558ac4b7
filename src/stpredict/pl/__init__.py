"""Plots (``st.pl``)."""

from ._spatial import prediction, scores

__all__ = ["prediction", "scores"]
