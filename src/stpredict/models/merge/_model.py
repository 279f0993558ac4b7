"""MERGE (Ganguly et al., CVPR 2025): a graph attention network over each slide's hierarchical graph."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import torch

from ...pp._graph import SpotGraph
from ...pp._hierarchical import CLUSTERINGS, Centroid, hierarchical_edges
from .._data import Key, covers_whole_slides, slide_items
from .._inputs import ModelInputs
from .._neural import NeuralModel
from .._params import Params
from .._train import TrainSettings
from ._module import MergeGAT


@dataclass(frozen=True)
class MergeParams(Params):
    """MERGE's hierarchical graph (:func:`stpredict.pp.hierarchical_graph`) and its GAT."""

    # the graph
    spots_per_cluster: int = 100
    n_spatial_clusters: int | None = None
    n_feature_clusters: int | None = None
    n_neighbors: int = 8
    spot_graph: SpotGraph = "knn"  # not in the paper: 'grid', the spot array's neighbours instead of the kNN
    centroid: Centroid = "feature"
    clusterings: tuple[str, ...] = CLUSTERINGS
    standardize: bool = True
    # the network
    input_dim: int = 256
    hidden: tuple[int, ...] = (128, 128, 128)
    heads: int = 4
    drop_edge: float = 0.2
    # not the paper's (PAPER_PARAMS): a residual path and no LayerNorm, chosen on validation from training
    # slides; the paper's GAT cannot keep a spot's own signal (docs/benchmarks.md, probes)
    norm: Literal["graph", "node", "none"] = "none"
    attention: Literal["gat", "gatv2"] = "gat"
    residual: bool = True
    linear_path: bool = False  # not in the paper: a linear map of the spot's and its neighbours' features added

    GRAPH = ("spots_per_cluster", "n_spatial_clusters", "n_feature_clusters", "n_neighbors", "spot_graph",
             "centroid", "clusterings", "standardize")  # fmt: skip

    def graph(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.as_dict().items() if k in self.GRAPH}

    def network(self) -> dict[str, Any]:
        return {k: v for k, v in self.as_dict().items() if k not in self.GRAPH}


#: The paper's network and schedule (Ganguly et al. 2025, Sec. 3.2; public code ``config.yaml``): 3 GAT
#: blocks of 448, 384 and 256 channels x 8 heads, all 400 epochs (no early stopping; the loop still keeps
#: the weights of the best validation epoch), graph LayerNorm and no residual path. 18.8 M weights: too slow
#: for the CPU default.
PAPER_PARAMS = MappingProxyType(
    {
        "hidden": (448, 384, 256),
        "heads": 8,
        "max_epochs": 400,
        "patience": 400,
        "norm": "graph",
        "residual": False,
        "linear_path": False,
        "spot_graph": "knn",
    }
)


class MergeModel(NeuralModel):
    """MERGE: GAT over MERGE's hierarchical graph of each slide, predicting all of a slide's spots jointly.

    Node features are the ``obsm`` representation (standardised, projected to ``input_dim`` when of
    another width). The graph of every slide, training or new, is built from that slide alone by
    :func:`stpredict.pp.hierarchical_graph` with this model's graph parameters and stored with the
    predictions (``obsp[f'{key_added}_hierarchical_connectivities']``). Training: one slide per batch,
    DropEdge, MSE on z-scored genes, Adam (``weight_decay=0``), early stopping on held-out training
    patients/slides with ``max_epochs`` (the paper's fixed 400) as the cap.

    ``model_params``: the graph's ``spots_per_cluster``, ``n_spatial_clusters``, ``n_feature_clusters``,
    ``n_neighbors``, ``spot_graph`` (``'knn'``, the paper's; ``'grid'``, not in the paper: the spot array's
    neighbours), ``centroid``, ``clusterings`` (``[]``: the 1-hop ablation) and ``standardize`` (see
    :func:`stpredict.pp.hierarchical_graph`); the network's ``input_dim``, ``hidden`` (channels per GAT
    block), ``heads``, ``drop_edge``, ``norm`` (``'graph'`` as the public code, ``'node'``, ``'none'``),
    ``attention`` (``'gat'``, the paper's; ``'gatv2'``) and ``residual`` (not in the paper: a linear path from
    each GAT layer's input to its output); the shared loop's ``lr``, ``weight_decay``,
    ``max_epochs``, ``patience``, ``max_time``, ``loss``, ``precision``, ``monitor``.

    The default network (``hidden=(128, 128, 128)``, 4 heads, ``residual=True``, ``norm='none'``) trains a
    HER2ST fold in well under a minute on 2 CPU cores; ``PAPER_PARAMS`` (``stpredict.models.merge.PAPER_PARAMS``)
    is the paper's configuration. The defaults differ from the paper where the paper's network failed the
    architecture probes (``benchmarks/bench_probes.py``): without a residual path it kept about half of a
    spot's own signal; they were chosen on the validation slide of the training slides.
    ``linear_path=True`` (not in the paper; off by default) adds a linear map of the spot's features and of
    its graph neighbours' mean to the network's output, started at the ridge fit of the training spots: the
    network then holds ridge_spatial's function (on the architecture probes it keeps the own-spot signal;
    on real slides the validation did not reward it, ``docs/benchmarks.md``).
    """

    Net = MergeParams
    training_defaults = TrainSettings(lr=1e-3, weight_decay=0.0, max_epochs=400, patience=30)
    fixed_training = ("batch_size",)  # one slide per batch
    #: the paper's ablations as ``model_params`` (benchmarked in ``docs/benchmarks.md``)
    ablations = MappingProxyType({"1hop": {"clusterings": []}})  # the 8-NN spatial graph only

    def graph_specs(self) -> Mapping[str, Mapping[str, Any]]:
        specs = {"hierarchical": {"kind": "hierarchical", **self._graph_params()}}
        if self.net_params.spot_graph == "grid":  # the array's ring, for graphs of spots that cut a slide
            specs["grid"] = {"kind": "grid"}
        return specs

    def _graph_params(self) -> dict[str, Any]:
        return {**self.net_params.graph(), "random_state": self.random_state}

    def _net(self) -> MergeGAT:
        return MergeGAT(self.n_features_, self.n_genes_, **self.net_params.network())

    def _items(self, inputs: ModelInputs, spots: np.ndarray, z=None, unit=None, *, stage="predict"):
        """One graph per slide: the stored hierarchical graph, or one built from the spots given.

        Held-out spatial blocks cut through a slide: each side gets a graph of its own spots, as a new slide would.
        """
        graph = inputs.graphs.get("hierarchical")
        if graph is None or not covers_whole_slides(inputs, spots):
            part = inputs.subset(np.isin(np.arange(inputs.n_spots), spots))
            params = self._graph_params()
            if params.pop("spot_graph") == "grid":
                params["spatial_edges"] = part.graphs["grid"]
            graph = hierarchical_edges(part.features, part.spatial, part.library, **params).connectivities
            local = np.empty(inputs.n_spots, dtype=np.int64)
            local[spots] = np.arange(len(spots))
        else:
            local = np.arange(inputs.n_spots)

        def slide(members: np.ndarray) -> dict:
            edges = graph[local[members]][:, local[members]].tocoo()
            return {
                Key.X: torch.from_numpy(inputs.features[members]),
                Key.EDGE_INDEX: torch.from_numpy(np.vstack([edges.row, edges.col]).astype(np.int64)),
            }

        return slide_items(inputs, spots, slide, z, unit)
