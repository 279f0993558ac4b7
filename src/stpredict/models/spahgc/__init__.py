"""SpaHGC (Shi et al., 2026): ``st.tl.fit(adata, model='spahgc')``.

The model, its network and its graph builders load on first use: ``st.tl.hetero_graph`` (``_inspect.py``)
imports this package when stpredict is imported, and must not bring torch-geometric with it.
"""

from .._lazy import lazy_getattr

_LAZY = {
    "PAPER_PARAMS": "._model", "SpahgcModel": "._model", "SpaHGCNet": "._module", "ReferenceBank": "._bank",
    "cosine_topk": "._bank", "hetero_graph": "._graph",
}  # fmt: skip
__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
