"""``st.tl.hetero_graph``: the heterogeneous graph a fitted SpaHGC model builds for one slide, to inspect."""

from __future__ import annotations

from anndata import AnnData

from ..._validate import check_adata, library_ids, slide_masks
from .._predictor import Predictor


def hetero_graph(predictor: Predictor, adata: AnnData, *, library_id: str | None = None):
    """SpaHGC's heterogeneous graph of one slide against the fitted model's reference bank.

    The graph that :meth:`~stpredict.models.Predictor.predict` feeds the network for this slide: target
    nodes (its spots), reference nodes (the training spots they retrieved, with ``bank_index``), and the
    ``('target', 'near', 'target')``, ``('reference', 'refer', 'target')`` (``edge_attr``: cosine
    similarity), ``('target', 'referred_by', 'reference')`` and ``('reference', 'close', 'reference')``
    edges. Nothing is written to ``adata``.

    Parameters
    ----------
    predictor
        A fitted ``model='spahgc'``.
    adata
        Slides with images or the predictor's representation (expression is not read).
    library_id
        The slide; may be left out when ``adata`` holds one.

    Returns
    -------
    A torch-geometric ``HeteroData``; ``graph['reference'].bank_index`` indexes
    ``predictor.model.bank_`` (its ``slide`` and ``spot`` name each reference).

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> train, test = adata[adata.obs.library_id != "C4"].copy(), adata[adata.obs.library_id == "C4"].copy()
    >>> params = {"hidden": 16, "heads": 2, "n_layers": 1, "max_epochs": 1}
    >>> predictor = st.tl.fit(train, model="spahgc", genes=["ERBB2", "GNAS"], model_params=params)
    >>> graph = st.tl.hetero_graph(predictor, test)
    >>> graph["target"].num_nodes, graph["reference", "refer", "target"].num_edges  # K = 7 per spot
    (70, 490)
    """
    if not hasattr(predictor.model, "slide_graphs"):
        msg = f"hetero_graph needs a fitted model='spahgc' predictor, got model={predictor.model_name!r}."
        raise ValueError(msg)
    check_adata(adata)
    slides = library_ids(adata)
    if library_id is None:
        if len(slides) > 1:
            msg = f"adata holds slides {slides}; choose one with library_id=."
            raise ValueError(msg)
        library_id = slides[0]
    if library_id not in slides:
        msg = f"library_id {library_id!r} is not among the slides of adata: {slides}."
        raise ValueError(msg)
    spots = adata[slide_masks(adata)[library_id]]
    inputs, _ = predictor.model_inputs(spots)
    _, graph, _ = next(predictor.model.slide_graphs(inputs))
    return graph
