"""SpaHGC (Shi et al., 2026): ``st.tl.fit(adata, model='spahgc')``."""

from ._bank import ReferenceBank, cosine_topk
from ._graph import hetero_graph
from ._model import PAPER_PARAMS, SpahgcModel
from ._module import SpaHGCNet

__all__ = ["PAPER_PARAMS", "ReferenceBank", "SpaHGCNet", "SpahgcModel", "cosine_topk", "hetero_graph"]
