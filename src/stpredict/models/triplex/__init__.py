"""TRIPLEX (Chung et al., CVPR 2024): ``st.tl.fit(adata, model='triplex')``."""

from ._model import PAPER_PARAMS, TriplexModel
from ._module import TriplexNet

__all__ = ["PAPER_PARAMS", "TriplexModel", "TriplexNet"]
