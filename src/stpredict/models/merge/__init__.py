"""MERGE (Ganguly et al., CVPR 2025): ``st.tl.fit(adata, model='merge')``.

The model and its network load on first use: ``st.pp.hierarchical_graph`` (``_graph.py``) imports this package
when stpredict is imported, and must not bring torch's model code with it.
"""

from importlib import import_module

_LAZY = {"PAPER_PARAMS": "._model", "MergeModel": "._model", "MergeGAT": "._module"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
