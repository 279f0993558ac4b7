"""Regions from predicted expression (clusters), their agreement with reference labels, and their markers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import LIBRARY_KEY
from .._docs import doc_params
from .._logging import logger
from .._predictions import get_predictions
from .._validate import check_adata, get_matrix, spot_libraries


def _finite_genes(adata: AnnData, layer: str | None) -> tuple[np.ndarray, pd.Index]:
    """The layer's genes that have values on every spot (a prediction layer holds NaN for genes not predicted).

    ``layer`` may also name the ``obsm`` DataFrame that prediction writes for slides without measured genes
    (image-only slides have no ``var`` to hold a layer).
    """
    if layer is not None and (layer in adata.obsm or layer not in adata.layers):
        values, genes = get_predictions(adata, layer)
        values, names, where = values.astype(np.float32), pd.Index(genes), f"predictions {layer!r}"
    else:
        values, names = get_matrix(adata, layer, dtype=np.float32), adata.var_names
        where = f"layers[{layer!r}]" if layer else "X"
    keep = np.isfinite(values).all(axis=0)
    if keep.sum() < 2:
        msg = f"{where} has {int(keep.sum())} gene(s) with values on every spot; at least 2 are needed."
        raise ValueError(msg)
    return values[:, keep], names[keep]


@doc_params("copy")
def cluster_predictions(
    adata: AnnData,
    *,
    layer: str | None,
    resolution: float = 1.0,
    n_clusters: int | None = None,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    key_added: str = "pred_clusters",
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Regions of (predicted) expression: PCA → neighbours → Leiden, or K-means to ``n_clusters``.

    Works on any layer, so on image-only slides' predictions as well as on measured expression. Genes
    without values on every spot (not predicted) are left out; values are scaled per gene.

    Parameters
    ----------
    adata
        Spots with ``layers[layer]``, e.g. the layer written by ``predictor.predict(adata, key_added='pred')``.
    layer
        Expression to cluster (``None``: ``X``): a layer, or the ``obsm`` DataFrame that
        :func:`stpredict.tl.predict` writes for a slide without measured genes (e.g. ``'pred_ridge'``).
    resolution
        Leiden resolution (ignored with ``n_clusters``).
    n_clusters
        K-means on the principal components to this many regions instead of Leiden.
    n_pcs, n_neighbors
        Principal components and kNN size (scanpy).
    key_added
        ``obs[key_added]`` (categorical) and ``uns[key_added]`` (parameters).
    random_state
        Seed of PCA, Leiden and K-means.
    {copy}

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> st.pp.select_genes(adata, n_genes=100)
    >>> st.tl.cluster_predictions(adata[:, adata.uns["selected"]["genes"]].copy(), layer="log1p", n_clusters=3, copy=True).obs["pred_clusters"].nunique()
    3
    """
    import scanpy as sc

    check_adata(adata)
    values, genes = _finite_genes(adata, layer)
    work = AnnData(values.copy(), obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=genes))
    sc.pp.scale(work)
    n_comps = max(1, min(n_pcs, work.n_obs - 1, work.n_vars - 1))
    sc.pp.pca(work, n_comps=n_comps, random_state=random_state)
    if n_clusters is not None:
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=int(n_clusters), n_init=10, random_state=random_state).fit_predict(
            work.obsm["X_pca"]
        )
        method = "kmeans"
    else:
        sc.pp.neighbors(work, n_neighbors=n_neighbors, use_rep="X_pca", random_state=random_state)
        sc.tl.leiden(
            work, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=random_state
        )
        labels = work.obs["leiden"].astype(int).to_numpy()
        method = "leiden"
    adata = adata.copy() if copy else adata
    adata.obs[key_added] = pd.Categorical(labels.astype(str), categories=sorted(set(labels.astype(str)), key=int))
    adata.uns[key_added] = {
        "layer": layer,
        "method": method,
        "resolution": resolution,
        "n_clusters": n_clusters,
        "n_pcs": n_comps,
        "n_genes": len(genes),
        "random_state": random_state,
    }
    logger.info("cluster_predictions: %d regions (%s) in obs[%r]", adata.obs[key_added].nunique(), method, key_added)
    return adata if copy else None


def region_agreement(adata: AnnData, *, key_pred: str, key_true: str, library_key: str = LIBRARY_KEY) -> pd.DataFrame:
    """Adjusted Rand index and normalised mutual information of two labelings, per slide and overall.

    Spots without a reference label (NaN) are left out, as pathologist annotations rarely cover every spot.

    Examples
    --------
    >>> import pandas as pd, anndata as ad, numpy as np
    >>> import stpredict as st
    >>> obs = pd.DataFrame({"library_id": ["s"] * 4, "a": list("xxyy"), "b": list("1122")}, index=list("pqrs"))
    >>> adata = ad.AnnData(obs=obs)
    >>> st.tl.region_agreement(adata, key_pred="b", key_true="a")[["ari", "nmi"]]
                ari  nmi
    library_id
    s           1.0  1.0
    all         1.0  1.0
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    for key in (key_pred, key_true):
        if key not in adata.obs:
            msg = f"adata.obs[{key!r}] not found (columns: {list(adata.obs.columns)})."
            raise KeyError(msg)
    labelled = adata.obs[key_true].notna().to_numpy() & adata.obs[key_pred].notna().to_numpy()
    libraries = spot_libraries(adata, library_key)
    rows = {}
    for name, mask in [*((lib, libraries == lib) for lib in pd.unique(libraries)), ("all", np.ones(adata.n_obs, bool))]:
        keep = mask & labelled
        true = adata.obs[key_true].to_numpy()[keep].astype(str)
        pred = adata.obs[key_pred].to_numpy()[keep].astype(str)
        rows[name] = {
            "ari": adjusted_rand_score(true, pred) if keep.any() else np.nan,
            "nmi": normalized_mutual_info_score(true, pred) if keep.any() else np.nan,
            "n_spots": int(keep.sum()),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = library_key
    return table


def differential_expression(
    adata: AnnData,
    *,
    groupby: str,
    layer: str | None,
    groups: Sequence[str] | str = "all",
    reference: str = "rest",
    method: str = "wilcoxon",
    key_added: str = "de",
    copy: bool = False,
) -> AnnData | None:
    """Marker genes of groups of spots (regions, clusters, annotations) in (predicted) expression.

    scanpy's ``rank_genes_groups`` on the genes with values on every spot of ``layer`` (a prediction
    layer's predicted genes, or the columns of the ``obsm`` DataFrame written for image-only slides), tidied by ``sc.get.rank_genes_groups_df`` into ``uns[key_added]``: one row
    per (group, gene) with ``names``, ``scores``, ``logfoldchanges``, ``pvals``, ``pvals_adj``. Feed it to
    :func:`enrichment`, whose background is then the genes tested here.

    Predicted values are smoother than measured ones (a model regresses towards the mean), so p-values
    on predictions are optimistic about effect sizes' certainty: read them as a ranking, not as evidence
    measured on that slide.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> st.pp.select_genes(adata, n_genes=50)
    >>> sub = adata[:, adata.uns["selected"]["genes"]].copy()
    >>> st.tl.differential_expression(sub, groupby="library_id", layer="log1p")
    >>> sub.uns["de"].columns[:3].tolist()
    ['group', 'names', 'scores']
    """
    import scanpy as sc

    check_adata(adata)
    if groupby not in adata.obs:
        msg = f"adata.obs[{groupby!r}] not found (columns: {list(adata.obs.columns)})."
        raise KeyError(msg)
    values, genes = _finite_genes(adata, layer)
    work = AnnData(values.copy(), obs=adata.obs[[groupby]].copy(), var=pd.DataFrame(index=genes))
    work.obs[groupby] = work.obs[groupby].astype(str).astype("category")
    groups = [groups] if isinstance(groups, str) and groups != "all" else groups
    sc.tl.rank_genes_groups(work, groupby, groups=groups, reference=reference, method=method, key_added="de")
    table = sc.get.rank_genes_groups_df(work, group=None, key="de")
    if "group" not in table:
        table.insert(0, "group", str(groups[0]) if groups != "all" else work.obs[groupby].cat.categories[0])
    adata = adata.copy() if copy else adata
    adata.uns[key_added] = table
    adata.uns[f"{key_added}_params"] = {"groupby": groupby, "layer": layer, "reference": reference, "method": method}
    logger.info(
        "differential_expression: %d groups x %d genes in uns[%r]", table["group"].nunique(), len(genes), key_added
    )
    return adata if copy else None
