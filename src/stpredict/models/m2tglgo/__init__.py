"""M2TGLGO (Shi et al., CVPR 2025): multi-modal spot graph, neighbourhood ranking, Gene Ontology gene graph."""

from ._model import PAPER_PARAMS, M2tglgoModel, gene_prior
from ._module import M2TGLGONet, M2TGLGORegressor, ranking_loss, reconstruction_loss

__all__ = [
    "PAPER_PARAMS",
    "M2TGLGONet",
    "M2TGLGORegressor",
    "M2tglgoModel",
    "gene_prior",
    "ranking_loss",
    "reconstruction_loss",
]
