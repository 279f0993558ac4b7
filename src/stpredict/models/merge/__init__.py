"""MERGE (Ganguly et al., CVPR 2025): ``st.tl.fit(adata, model='merge')``.

The model and its network load on first use: ``st.pp.hierarchical_graph`` (``_graph.py``) imports this package
when stpredict is imported, and must not bring torch's model code with it.
"""

from .._lazy import lazy_getattr

_LAZY = {"PAPER_PARAMS": "._model", "MergeModel": "._model", "MergeGAT": "._module"}
__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
