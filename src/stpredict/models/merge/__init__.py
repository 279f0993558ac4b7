"""MERGE (Ganguly et al., CVPR 2025): ``st.tl.fit(adata, model='merge')``."""

from ._model import PAPER_PARAMS, MergeModel
from ._module import MergeGAT

__all__ = ["PAPER_PARAMS", "MergeGAT", "MergeModel"]
