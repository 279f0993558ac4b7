"""MERGE's multi-faceted hierarchical graph (Ganguly et al., CVPR 2025), built slide by slide.

Three kinds of edges join the spots of one slide:

- **spatial**: each spot to its ``n_neighbors`` nearest spot centres (x and y), symmetrised; or, not in the
  paper (``spot_graph='grid'``), to its neighbours on the spot array;
- **internal**: each spot to the centroid spot of its cluster, for a KMeans clustering of the spot
  centres (``'spatial'``) and one of the image representation (``'feature'``);
- **shortcut**: all centroid spots of both clusterings joined into a clique, so that information crosses
  the slide in two hops.

Two bugs of the public code are not repeated: its kNN reads the x coordinate twice, and it records the
centroid's index within its cluster instead of the spot's index (``../shared/docs/methods.md`` 1.5).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._constants import LIBRARY_KEY
from .._docs import doc_params
from .._logging import logger
from .._validate import check_adata, get_rep, require_spatial, spot_libraries
from ._graph import GRAPH_BUILDERS, SpotGraph, check_spot_graph

Centroid = Literal["feature", "spatial", "random"]
CLUSTERINGS = ("spatial", "feature")
CENTROIDS = ("feature", "spatial", "random")
# bit flags: one edge may be of several kinds (a kNN neighbour that is also its cluster's centroid)
EDGE_TYPES = {"spatial": 1, "internal_spatial": 2, "internal_feature": 4, "shortcut": 8}


@dataclass
class HierarchicalGraph:
    """The graph of :func:`hierarchical_graph` on arrays, before it is written into an AnnData.

    Attributes
    ----------
    connectivities
        Binary, symmetric, no self-loops, no edge between slides.
    edge_type
        Same sparsity; the sum of the :data:`EDGE_TYPES` flags of each edge.
    clusters
        ``{'spatial': labels, 'feature': labels}`` per spot (cluster numbers restart on every slide; -1
        where a clustering was not built).
    centroid
        Whether each spot is the centroid of one of its clusters.
    params
        Parameters, edge-type codes and the number of clusters of each slide.
    """

    connectivities: sp.csr_matrix
    edge_type: sp.csr_matrix
    clusters: dict[str, np.ndarray]
    centroid: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def edges_of(self, kind: str) -> sp.csr_matrix:
        """Binary matrix of the edges carrying ``kind`` (a key of :data:`EDGE_TYPES`)."""
        flagged = self.edge_type.copy()
        flagged.data = ((flagged.data.astype(np.int64) & EDGE_TYPES[kind]) > 0).astype(np.float32)
        flagged.eliminate_zeros()
        return flagged

    def write(self, adata: AnnData, key_added: str, coords: np.ndarray | None = None) -> None:
        """``obsp[f'{key}_connectivities']``/``_distances``/``_edge_type``, ``obs`` clusters and centroids, ``uns[key]``."""
        from ._graph import _edge_distances, write_graph

        distances = None if coords is None else _edge_distances(self.connectivities, coords).astype(np.float32)
        write_graph(adata, self.connectivities, distances, {"kind": "hierarchical", **self.params}, key_added)
        adata.obsp[f"{key_added}_edge_type"] = self.edge_type
        for name, labels in self.clusters.items():
            values = pd.Series(labels, index=adata.obs_names).astype(str).where(labels >= 0)
            adata.obs[f"{key_added}_{name}_cluster"] = pd.Categorical(
                values, categories=[str(c) for c in sorted(set(labels[labels >= 0]))]
            )
        adata.obs[f"{key_added}_centroid"] = self.centroid
        adata.uns[key_added] = self.params


def n_clusters_for(n_spots: int, spots_per_cluster: float, requested: int | None) -> int:
    """Clusters of a slide: ``requested``, else ``n_spots / spots_per_cluster`` rounded, at least 2 when possible."""
    wanted = requested if requested is not None else int(round(n_spots / spots_per_cluster))
    return int(max(min(wanted, n_spots), min(2, n_spots)))


def _check_params(spots_per_cluster, n_neighbors, centroid, clusterings, n_spatial, n_feature) -> tuple[str, ...]:
    clusterings = tuple(clusterings)
    unknown = sorted(set(clusterings) - set(CLUSTERINGS))
    if unknown or len(set(clusterings)) != len(clusterings):
        msg = (
            f"clusterings must be distinct names among {CLUSTERINGS} (or empty for the 1-hop graph), got {clusterings}."
        )
        raise ValueError(msg)
    if centroid not in CENTROIDS:
        msg = f"centroid must be one of {CENTROIDS}, got {centroid!r}."
        raise ValueError(msg)
    if not spots_per_cluster > 0:
        msg = f"spots_per_cluster must be positive, got {spots_per_cluster}."
        raise ValueError(msg)
    if int(n_neighbors) != n_neighbors or n_neighbors < 0:
        msg = f"n_neighbors must be a non-negative integer, got {n_neighbors}."
        raise ValueError(msg)
    for name, value in (("n_spatial_clusters", n_spatial), ("n_feature_clusters", n_feature)):
        if value is not None and (int(value) != value or value < 1):
            msg = f"{name} must be a positive integer or None, got {value}."
            raise ValueError(msg)
    return clusterings


def _knn_pairs(coords: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetrised ``n_neighbors``-nearest-neighbour pairs (local indices; fewer on tiny slides)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(int(n_neighbors), len(coords) - 1)
    if k < 1:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    # querying the fitted points themselves (X=None) leaves each spot out of its own neighbours
    _, neighbours = NearestNeighbors(n_neighbors=k).fit(coords).kneighbors()
    rows, cols = np.repeat(np.arange(len(coords)), k), neighbours.ravel()
    return np.concatenate([rows, cols]), np.concatenate([cols, rows])


def _kmeans(values: np.ndarray, n_clusters: int, random_state: int | None) -> np.ndarray:
    """KMeans labels renumbered 0..k-1 (identical points can leave clusters empty)."""
    from sklearn.cluster import KMeans

    n_clusters = min(n_clusters, len(np.unique(values, axis=0)))  # no more clusters than distinct points
    if n_clusters == 1:
        return np.zeros(len(values), dtype=np.int64)
    labels = KMeans(n_clusters=n_clusters, n_init=10, max_iter=1000, random_state=random_state).fit_predict(values)
    return np.unique(labels, return_inverse=True)[1]


def _centroids(
    labels: np.ndarray, embedding: np.ndarray, coords: np.ndarray, how: str, rng: np.random.Generator
) -> np.ndarray:
    """Local index of the centroid spot of every cluster (the member nearest the cluster's mean, or a random one)."""
    space = embedding if how == "feature" else coords
    chosen = np.empty(labels.max() + 1, dtype=np.int64)
    for cluster in range(len(chosen)):
        members = np.flatnonzero(labels == cluster)
        if how == "random":
            chosen[cluster] = rng.choice(members)
            continue
        values = space[members]
        chosen[cluster] = members[np.argmin(((values - values.mean(axis=0)) ** 2).sum(axis=1))]
    return chosen


def _standardized(values: np.ndarray) -> np.ndarray:
    std = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)


def hierarchical_edges(
    features: np.ndarray,
    spatial: np.ndarray,
    library: np.ndarray,
    *,
    spots_per_cluster: float = 100,
    n_spatial_clusters: int | None = None,
    n_feature_clusters: int | None = None,
    n_neighbors: int = 8,
    centroid: Centroid = "feature",
    clusterings: Sequence[str] = CLUSTERINGS,
    standardize: bool = True,
    spatial_edges: sp.spmatrix | None = None,
    random_state: int | None = 0,
) -> HierarchicalGraph:
    """MERGE's graph on arrays (see :func:`hierarchical_graph`); spots of different ``library`` values are never joined.

    ``spatial_edges``: an adjacency over all spots (e.g. the array's grid ring) whose within-slide edges
    replace the ``n_neighbors`` nearest-centre edges.
    """
    clusterings = _check_params(
        spots_per_cluster, n_neighbors, centroid, clusterings, n_spatial_clusters, n_feature_clusters
    )
    features = np.asarray(features, dtype=np.float64)
    spatial = np.asarray(spatial, dtype=np.float64)
    spatial_edges = None if spatial_edges is None else sp.csr_matrix(spatial_edges)
    library = np.asarray(library)
    n = len(features)
    requested = {"spatial": n_spatial_clusters, "feature": n_feature_clusters}
    rng = np.random.default_rng(random_state)
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {kind: [] for kind in EDGE_TYPES}
    clusters = {name: np.full(n, -1, dtype=np.int64) for name in clusterings}
    is_centroid = np.zeros(n, dtype=bool)
    per_slide: dict[str, dict[str, int]] = {}
    for lib in pd.unique(library):
        spots = np.flatnonzero(library == lib)
        coords = spatial[spots]
        embedding = _standardized(features[spots]) if standardize else features[spots]
        if spatial_edges is None:
            rows, cols = _knn_pairs(coords, n_neighbors)
        else:
            within = spatial_edges[spots][:, spots].tocoo()
            rows, cols = within.row.astype(np.int64), within.col.astype(np.int64)
        pairs["spatial"].append((spots[rows], spots[cols]))
        slide_centroids = []
        per_slide[str(lib)] = {}
        for name in clusterings:
            k = n_clusters_for(len(spots), spots_per_cluster, requested[name])
            labels = _kmeans(coords if name == "spatial" else embedding, k, random_state)
            centre = _centroids(labels, embedding, coords, centroid, rng)
            members = np.flatnonzero(centre[labels] != np.arange(len(spots)))
            pairs[f"internal_{name}"].append((spots[members], spots[centre[labels[members]]]))
            clusters[name][spots] = labels
            slide_centroids.append(centre)
            per_slide[str(lib)][name] = int(labels.max() + 1)
        if slide_centroids:
            hubs = spots[np.unique(np.concatenate(slide_centroids))]
            is_centroid[hubs] = True
            a, b = np.meshgrid(hubs, hubs, indexing="ij")
            off_diagonal = a != b
            pairs["shortcut"].append((a[off_diagonal], b[off_diagonal]))
    edge_type = sp.csr_matrix((n, n), dtype=np.int64)
    for kind, flag in EDGE_TYPES.items():
        if not pairs[kind]:
            continue
        i = np.concatenate([p[0] for p in pairs[kind]])
        j = np.concatenate([p[1] for p in pairs[kind]])
        present = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
        present = (present + present.T) > 0  # undirected: every edge both ways, once
        edge_type = edge_type + flag * present.astype(np.int64)
    edge_type = sp.csr_matrix(edge_type, dtype=np.int64)
    edge_type.setdiag(0)
    edge_type.eliminate_zeros()
    edge_type = edge_type.astype(np.uint8).tocsr()
    connectivities = edge_type.copy().astype(np.float32)
    connectivities.data[:] = 1.0
    params = {
        "spots_per_cluster": float(spots_per_cluster),
        "n_spatial_clusters": n_spatial_clusters,
        "n_feature_clusters": n_feature_clusters,
        "n_neighbors": int(n_neighbors),
        "spot_graph": "knn" if spatial_edges is None else "given",
        "centroid": centroid,
        "clusterings": list(clusterings),
        "standardize": bool(standardize),
        "random_state": random_state,
        "edge_types": dict(EDGE_TYPES),
        "n_clusters": per_slide,
    }
    return HierarchicalGraph(connectivities.tocsr(), edge_type, clusters, is_centroid, params)


def compute_hierarchical_graph(
    adata: AnnData,
    features: np.ndarray,
    *,
    library_key: str = LIBRARY_KEY,
    spot_graph: SpotGraph = "knn",
    **params: Any,
) -> HierarchicalGraph:
    """:func:`hierarchical_edges` on the slides of ``adata`` with the given representation.

    ``spot_graph='grid'``: the spatial edges join array neighbours (:func:`stpredict.pp.spatial_graph`'s
    ``'grid'``) instead of the ``n_neighbors`` nearest centres.
    """
    check_spot_graph(spot_graph)
    if spot_graph == "grid":
        from ._graph import compute_spatial_graph

        params["spatial_edges"] = compute_spatial_graph(adata, kind="grid", library_key=library_key)[0]
    graph = hierarchical_edges(features, require_spatial(adata), spot_libraries(adata, library_key), **params)
    graph.params["spot_graph"] = spot_graph
    return graph


@doc_params("copy", "library_key")
def hierarchical_graph(
    adata: AnnData,
    *,
    use_rep: str = "X_handcrafted",
    spots_per_cluster: float = 100,
    n_spatial_clusters: int | None = None,
    n_feature_clusters: int | None = None,
    n_neighbors: int = 8,
    centroid: Centroid = "feature",
    clusterings: Sequence[str] = CLUSTERINGS,
    standardize: bool = True,
    spot_graph: SpotGraph = "knn",
    library_key: str = LIBRARY_KEY,
    key_added: str = "merge",
    random_state: int | None = 0,
    copy: bool = False,
) -> AnnData | None:
    """Build MERGE's multi-faceted hierarchical graph of every slide (Ganguly et al., CVPR 2025).

    On each slide separately (never across slides):

    1. every spot is joined to its ``n_neighbors`` nearest spot centres (x, y), symmetrised (or, not in the
       paper, ``spot_graph='grid'``: to its array neighbours);
    2. the spots are clustered with KMeans twice: on their centres (spatial clusters) and on the image
       representation (feature clusters); unless given, a slide of ``n`` spots gets
       ``round(n / spots_per_cluster)`` clusters, at least 2 when it has 2 spots (the paper's best was about
       100 spots per cluster);
    3. in each cluster the **centroid** is the member nearest the cluster's mean embedding; every member is
       joined to it (internal edges);
    4. all centroids of both clusterings are joined into a clique (shortcut edges).

    Ablations of the paper: ``clusterings=()`` (1-hop spatial graph only), ``('spatial',)`` or
    ``('feature',)`` (one clustering), ``centroid='spatial'`` (member nearest the cluster's mean position)
    or ``'random'``.

    Parameters
    ----------
    adata
        Slides with ``obsm['spatial']`` and the representation ``obsm[use_rep]``.
    use_rep
        Image representation clustered and used to pick centroids (see :func:`stpredict.pp.image_features`).
    spots_per_cluster
        Target cluster size when the number of clusters is not given.
    n_spatial_clusters, n_feature_clusters
        Clusters per slide (overrides ``spots_per_cluster``; MERGE's public code used 5).
    n_neighbors
        Spatial neighbours per spot (8: the first ring of legacy ST's square grid). ``0`` drops them.
    centroid
        ``'feature'`` (paper), ``'spatial'`` or ``'random'`` centroid spots.
    clusterings
        Which clusterings add internal edges and centroids.
    standardize
        z-score each representation column within the slide before clustering, so that no feature
        dominates by its units (MERGE's learned 256-d embeddings need none; handcrafted features do).
    spot_graph
        ``'knn'`` (the paper's: ``n_neighbors`` nearest centres) or ``'grid'`` (not in the paper: the first
        ring of the spot array, 8 on legacy ST, 6 on Visium, as :func:`stpredict.pp.spatial_graph`; exact
        where pixel positions are jittered or spots are missing; needs ``obs['array_row']``/``['array_col']``).
    {library_key}
    key_added
        Prefix of every output key.
    random_state
        Seed of KMeans and of random centroids.
    {copy}

    Returns
    -------
    ``None`` or the modified copy, with

    - ``obsp[f'{key_added}_connectivities']``: binary symmetric adjacency (squidpy's layout, with
      ``obsp[f'{key_added}_distances']`` in full-resolution pixels and ``uns[f'{key_added}_neighbors']``);
    - ``obsp[f'{key_added}_edge_type']``: the sum of the edge's kinds, ``spatial`` = 1,
      ``internal_spatial`` = 2, ``internal_feature`` = 4, ``shortcut`` = 8 (test one with ``& code``);
    - ``obs[f'{key_added}_spatial_cluster']``, ``obs[f'{key_added}_feature_cluster']`` (numbered per
      slide), ``obs[f'{key_added}_centroid']``;
    - ``uns[key_added]``: parameters, edge-type codes and the clusters of each slide.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.image_features(adata, show_progress_bar=False)
    >>> st.pp.hierarchical_graph(adata, spots_per_cluster=25)
    >>> adata.uns["merge"]["n_clusters"]["C3"]
    {'spatial': 3, 'feature': 3}
    >>> int(adata.obs["merge_centroid"].sum()) <= 3 * 6  # 3 + 3 centroids per slide, fewer where they coincide
    True
    """
    check_adata(adata)
    started = time.perf_counter()
    features = get_rep(adata, use_rep)
    graph = compute_hierarchical_graph(
        adata,
        features,
        library_key=library_key,
        spots_per_cluster=spots_per_cluster,
        n_spatial_clusters=n_spatial_clusters,
        n_feature_clusters=n_feature_clusters,
        n_neighbors=n_neighbors,
        centroid=centroid,
        clusterings=clusterings,
        standardize=standardize,
        spot_graph=spot_graph,
        random_state=random_state,
    )
    graph.params["use_rep"] = use_rep
    graph.params["library_key"] = library_key
    adata = adata.copy() if copy else adata
    graph.write(adata, key_added, require_spatial(adata))
    logger.info(
        "hierarchical_graph: added obsp[%r] (%.1f edges per spot, %d centroid spots, %.2f s)",
        f"{key_added}_connectivities",
        graph.connectivities.nnz / max(adata.n_obs, 1),
        int(graph.centroid.sum()),
        time.perf_counter() - started,
    )
    return adata if copy else None


def _register_graph_kind() -> None:
    """Models ask for this graph with ``{'kind': 'hierarchical', ...}`` (e.g. MERGE's ``graph_specs``)."""
    GRAPH_BUILDERS["hierarchical"] = compute_hierarchical_graph


_register_graph_kind()
