"""SpaHGC (Shi et al., 2026): ``st.tl.fit(adata, model='spahgc')``.

The model, its network and its graph builders load on first use: ``st.tl.hetero_graph`` (``_inspect.py``)
imports this package when stpredict is imported, and must not bring torch-geometric with it.
"""

from importlib import import_module

_LAZY = {
    "PAPER_PARAMS": "._model", "SpahgcModel": "._model", "SpaHGCNet": "._module", "ReferenceBank": "._bank",
    "cosine_topk": "._bank", "hetero_graph": "._graph",
}  # fmt: skip
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
