"""MERGE (Ganguly et al., CVPR 2025): ``st.tl.fit(adata, model='merge')``.

Its hierarchical spot graph is a preprocessing step, ``st.pp.hierarchical_graph`` (``stpredict/pp/_hierarchical.py``);
the model and its network load on first use, so importing stpredict does not bring torch's model code.
"""

from .._lazy import lazy_getattr

_LAZY = {"PAPER_PARAMS": "._model", "MergeModel": "._model", "MergeGAT": "._module"}
__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
