"""iStar (Zhang et al., Nat. Biotechnol. 2024): ``st.tl.fit(adata, model='istar')``, then ``st.tl.super_resolve``."""

from ._model import PAPER_PARAMS, IstarModel, IstarParams, spot_bags
from ._module import IstarNet

__all__ = ["PAPER_PARAMS", "IstarModel", "IstarNet", "IstarParams", "spot_bags"]
