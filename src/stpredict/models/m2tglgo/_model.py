"""M2TGLGO (Shi et al., CVPR 2025) as ``model='m2tglgo'``: a multi-modal spot graph and GO-guided gene predictors."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pandas as pd
import torch

from ..._logging import warn
from .._inputs import ModelInputs
from .._neural import NeuralModel
from .._train import TRAIN_DEFAULTS, TrainSettings, predict_network, single_item
from ._graph import edge_index, hop_pairs
from ._module import MODALITIES, NUCLEI_COLUMNS, M2TGLGORegressor

GENE_FEATURES = ("go", "learned")
#: the paper's configuration (Sec. 4: two GAT layers of 256 and 512, AdamW lr 1e-4, 500 epochs, sigmoids of
#: Eq. 1 and 6, fixed gene node features): GPU-sized, and slow to learn on CPU budgets (docs/models.md)
PAPER_PARAMS = {
    "hidden": [256, 512],
    "lr": 1e-4,
    "max_epochs": 500,
    "patience": 50,
    "activation": "sigmoid",
    "output_activation": "sigmoid",
    "gene_features": "go",
    "residual": False,
}
NET_PARAMS = ("gamma", "dropout", "activation", "output_activation", "residual")
LOSS_PARAMS = ("reconstruction_weight", "ranking_weight", "margin", "dense_limit")


def gene_prior(
    genes: list[str],
    *,
    go_path: str | None,
    namespaces: list[str],
    n_top: int,
    dim: int,
    min_coverage: float,
    random_state: int | None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The GO gene graph ``(2, E)``, gene node features ``(genes, f)`` and the genes without annotation.

    Features: a truncated SVD of the genes' propagated GO annotations (gene x term, rows L2-normalised),
    the stand-in for Gene2Vec (not obtainable offline); genes without annotation get fixed random unit
    vectors so that their predictors differ.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    from ...datasets import gene_ontology
    from ...io._gene_ontology import gene_graph

    go = gene_ontology(go_path) if go_path else gene_ontology()
    similarity = go.similarity(genes, namespaces)
    annotated = similarity.any(axis=1)
    missing = [g for g, ok in zip(genes, annotated, strict=True) if not ok]
    if annotated.mean() < min_coverage:
        msg = (
            f"Only {int(annotated.sum())} of {len(genes)} genes have Gene Ontology annotations in {go!r} "
            f"(e.g. missing: {missing[:5]}); M2TGLGO's GO prior needs at least {min_coverage:.0%}. For "
            "non-human genes pass model_params={'go_path': <folder with GO and the species' gene2go>} "
            "(see st.datasets.gene_ontology), or run without the prior: model_params={'go_prior': False}."
        )
        raise ValueError(msg)
    if missing:
        warn(
            f"m2tglgo: {len(missing)} of {len(genes)} genes have no GO annotation and no gene-graph edges: {missing[:10]}"
        )
    edges = edge_index(gene_graph(similarity, n_top=n_top))
    terms, _ = go.annotation_matrix(genes, namespaces, propagate=True)
    rng = np.random.default_rng(random_state)
    n_components = max(1, min(dim, terms.shape[1] - 1, len(genes) - 1))
    features = TruncatedSVD(n_components=n_components, random_state=random_state).fit_transform(normalize(terms))
    features = normalize(features)
    if missing:
        features[~annotated] = normalize(rng.standard_normal((len(missing), n_components)))
    return edges, features.astype(np.float32), missing


class M2tglgoModel(NeuralModel):
    """M2TGLGO: three modalities on a kNN spot graph, neighbourhood ranking, GO-guided gene predictors.

    Per spot: the deep representation (``use_rep``), the 14 nuclei morphology and the 3 nuclei topology
    features (``st.pp.image_features(method='nuclei')``, read from ``obsm`` when stored with the same
    patch size, else computed from the images), each standardised on the training spots. Spot graph: kNN
    with ``n_neighbours`` = 6 per slide. Two MMGE layers (``hidden``) mix an intra-modal GAT and the
    inter-modal attention as ``gamma``·intra + (1 − ``gamma``)·inter; a linear layer and a sigmoid fuse the
    modalities into H. Gene predictors P: one GAT over the GO gene graph (``go_n_top`` threshold) on gene
    node features (``gene_features='go'``: SVD of the GO annotations, fixed; ``'learned'``: the same,
    trained). Prediction H·Pᵀ; loss MSE + ``reconstruction_weight``·Eq. 8 + ``ranking_weight``·Eq. 9.
    AdamW, one slide graph per step, early stopping on held-out training patients/slides.

    Ablations: ``go_prior=False`` (a free predictor per gene), ``ranking_weight=0``,
    ``reconstruction_weight=0``, ``modalities=['deep']`` (or any subset).
    """

    defaults = MappingProxyType(
        {
            **TRAIN_DEFAULTS,
            # CPU default, chosen on a training fold's validation slide (docs/models.md); PAPER_PARAMS: the paper's
            "lr": 1e-3,
            "weight_decay": 1e-3,  # from the authors' code
            "max_epochs": 200,
            "patience": 20,
            "batch_size": 1,  # one slide graph per step; not used otherwise
            "hidden": [128, 256],
            "gamma": 0.75,
            "dropout": 0.5,  # on each GAT's input, as the authors' code (DGL feat_drop)
            "activation": "relu",  # of the intra-modal GAT: the authors' code; the paper writes a sigmoid
            "output_activation": "none",  # of H: the authors' code; the paper's sigmoid stalls training
            "residual": True,  # not in the paper: the intra-modal GATs keep the spot's own features (probes)
            "modalities": list(MODALITIES),
            "n_neighbours": 6,
            "reconstruction_weight": 1.0,
            "ranking_weight": 1.0,
            "margin": 0.01,
            "dense_limit": 4096,
            "go_prior": True,
            "gene_features": "learned",
            "gene_dim": 200,
            "go_namespaces": ["BP", "MF", "CC"],
            "go_n_top": 10,
            "go_path": None,
            "min_go_coverage": 0.5,
            "patch_size": 224,
            "patch_unit": "px",
        }
    )
    #: the paper's ablations (Tables 3-4) as ``model_params``
    ablations = MappingProxyType(
        {
            "no_go": {"go_prior": False},
            "no_ranking": {"ranking_weight": 0.0},
            "no_reconstruction": {"reconstruction_weight": 0.0},
            "deep": {"modalities": ["deep"]},
            "nuclei": {"modalities": ["morphology", "topology"]},
        }
    )

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        p = self.params
        unknown = sorted(set(p["modalities"]) - set(MODALITIES))
        if unknown or not p["modalities"]:
            msg = f"modalities must be a non-empty subset of {list(MODALITIES)}, got {p['modalities']!r}."
            raise ValueError(msg)
        if p["gene_features"] not in GENE_FEATURES:
            msg = f"gene_features must be one of {list(GENE_FEATURES)}, got {p['gene_features']!r}."
            raise ValueError(msg)
        if not 0 <= float(p["gamma"]) <= 1:
            msg = f"gamma must be in [0, 1], got {p['gamma']!r}."
            raise ValueError(msg)

    def graph_specs(self):
        return {"spatial": {"kind": "knn", "n_neighs": int(self.params["n_neighbours"])}}

    def reads_pixels(self) -> bool:
        return any(m in NUCLEI_COLUMNS for m in self.params["modalities"])

    def reads_representation(self) -> bool:
        return "deep" in self.params["modalities"]

    def _net(self) -> M2TGLGORegressor:
        p = self.params
        prior = {}
        if p["go_prior"]:
            prior = {
                "gene_features": torch.from_numpy(self.gene_features_),
                "gene_edges": torch.from_numpy(self.gene_edges_),
                "learn_gene_features": p["gene_features"] == "learned",
            }
        return M2TGLGORegressor(
            max(self.n_features_, 1),
            self.n_genes_,
            modalities=tuple(p["modalities"]),
            hidden=tuple(int(h) for h in p["hidden"]),
            **{k: p[k] for k in NET_PARAMS},
            **{k: p[k] for k in LOSS_PARAMS},
            **prior,
        )

    def _nuclei(self, inputs: ModelInputs) -> np.ndarray | None:
        if not self.reads_pixels():
            return None
        if inputs.images is None:
            msg = "M2TGLGO's nuclei modalities need the slide images (uns['spatial']) of every spot."
            raise ValueError(msg)
        values = inputs.images.features("nuclei", size=self.params["patch_size"], unit=self.params["patch_unit"])
        return np.nan_to_num(np.asarray(values, dtype=np.float32))

    def _items(self, inputs: ModelInputs, nuclei, z=None, unit=None, spots_of=None):
        """One graph per slide (``spots_of``: slide -> spot indices): features, kNN edges, hop pairs, targets."""
        items, order = [], []
        graph = inputs.graphs["spatial"]
        for spots in spots_of:
            adjacency = graph[spots][:, spots]
            item = {
                "x": torch.from_numpy(
                    np.ascontiguousarray(inputs.features[spots])
                    if inputs.features.shape[1]
                    else np.zeros((len(spots), 1), np.float32)
                ),
                "edges": torch.from_numpy(edge_index(adjacency)),
            }
            if nuclei is not None:
                item["nuclei"] = torch.from_numpy(nuclei[spots])
            if z is not None:
                for r, pairs in enumerate(hop_pairs(adjacency, 3), start=1):
                    item[f"hop{r}"] = torch.from_numpy(pairs)
                item["y"] = torch.from_numpy(z[spots].astype(np.float32))
                item["unit"] = torch.from_numpy(unit[spots])
            items.append(item)
            order.append(spots)
        return items, order

    def fit(self, inputs: ModelInputs, targets: np.ndarray) -> M2tglgoModel:
        p = self.params
        self._record_shapes(inputs, targets)
        if p["go_prior"]:
            if self.genes_ is None or len(self.genes_) != targets.shape[1]:
                msg = "M2TGLGO's GO prior needs the names of the predicted genes (fit through st.tl.fit)."
                raise ValueError(msg)
            self.gene_edges_, self.gene_features_, self.unannotated_genes_ = gene_prior(
                list(self.genes_),
                go_path=p["go_path"],
                namespaces=list(p["go_namespaces"]),
                n_top=int(p["go_n_top"]),
                dim=int(p["gene_dim"]),
                min_coverage=float(p["min_go_coverage"]),
                random_state=self.random_state,
            )
        torch.manual_seed(0 if self.random_state is None else self.random_state)
        self.net_ = self._net()
        if inputs.features.shape[1]:  # no deep representation when modalities leave 'deep' out
            self.net_.scale_in.set(inputs.features)
        settings = TrainSettings.from_params(p)
        nuclei = self._nuclei(inputs)
        if nuclei is not None:
            self.net_.scale_nuclei.set(nuclei)
        z = self._standardize_targets(targets)
        held, held_names, kind, unit = self._held_out(inputs)
        unit = np.unique(unit, return_inverse=True)[1]
        library = np.asarray(inputs.library, dtype=str)
        train_slides = [np.flatnonzero(~held & (library == s)) for s in pd.unique(library[~held])]
        val_slides = [np.flatnonzero(held & (library == s)) for s in pd.unique(library[held])]
        train_items, _ = self._items(inputs, nuclei, z, unit, train_slides)
        val_items, val_order = self._items(inputs, nuclei, z, unit, val_slides)
        result = self._train_net(train_items, val_items, settings, collate_fn=single_item)
        predicted = np.empty((int(held.sum()), self.n_genes_), dtype=np.float32)
        if val_items:
            predicted[np.searchsorted(np.flatnonzero(held), np.concatenate(val_order))] = self._run(val_items)
        self._record_validation(result, z[held], inputs.subset(held), unit[held], held_names, kind, predicted=predicted)
        return self

    def _run(self, items: list[dict]) -> np.ndarray:
        return predict_network(
            self.net_, items, device=self.device, precision=self.params["precision"], collate_fn=single_item
        )

    def _predict_z(self, inputs: ModelInputs) -> np.ndarray:
        library = np.asarray(inputs.library, dtype=str)
        slides = [np.flatnonzero(library == s) for s in pd.unique(library)]
        items, order = self._items(inputs, self._nuclei(inputs), spots_of=slides)
        out = np.empty((inputs.n_spots, self.n_genes_), dtype=np.float32)
        out[np.concatenate(order)] = self._run(items)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        if self.params["go_prior"]:
            state["gene.features"] = self.gene_features_
            state["gene.edges"] = self.gene_edges_
        return state

    def load_state_dict(self, state) -> None:
        if self.params["go_prior"]:
            self.gene_features_ = np.asarray(state["gene.features"], dtype=np.float32)
            self.gene_edges_ = np.asarray(state["gene.edges"], dtype=np.int64)
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith("gene.")})
