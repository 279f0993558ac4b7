"""SEPAL (Mejia et al., ICCVW 2023): changes from the training mean, refined by a GNN over each spot's local graph."""

from ._model import PAPER_PARAMS, SepalModel

__all__ = ["PAPER_PARAMS", "SepalModel"]
