"""SpaHGC (Shi et al., 2026) as ``model='spahgc'``: expression transferred from look-alike spots of training slides."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans

from ...pp._graph import spot_graph_spec
from .._data import Items, with_targets
from .._inputs import ModelInputs
from .._neural import NeuralModel, Split
from .._train import TrainSettings
from ._bank import ReferenceBank
from ._graph import graph_tensors, hetero_graph
from ._module import SpaHGCRegressor
from ._params import SpahgcParams


def retrieval_groups(inputs: ModelInputs, n_blocks: int = 5, random_state: int | None = 0) -> np.ndarray:
    """What a training spot may not retrieve from: its own slide, or on a lone slide its own spatial block.

    With one training slide, no spot could retrieve from another slide; contiguous spatial blocks
    (KMeans on the spot centres) stand in for slides, as the validation split does.
    """
    library = np.asarray(inputs.library, dtype=str)
    if len(np.unique(library)) >= 2 or inputs.n_spots < 2 * n_blocks:
        return library
    labels = KMeans(n_clusters=n_blocks, n_init=10, random_state=random_state).fit_predict(inputs.spatial)
    return np.char.add(np.char.add(library, "/block"), labels.astype(str))


#: the paper's configuration (Shi et al. 2026; AdamW 1e-4, 200 epochs; no residual path, the prediction
#: trained on the masked view)
PAPER_PARAMS = MappingProxyType(
    {"lr": 1e-4, "residual": False, "supervised_view": "masked", "linear_path": False, "spot_graph": "knn"}
)


class SpahgcModel(NeuralModel):
    """SpaHGC: each slide's spots in a heterogeneous graph with their look-alike spots of the training slides.

    The reference bank holds every training spot's standardised embedding and z-scored expression; it is
    part of the fitted model (saved with it) and frozen after ``fit``. For a target slide, each spot is
    joined to its ``n_neighbours`` (Q) nearest spots (symmetrised kNN, stored with the predictions) and to
    its ``k`` (K) most cosine-similar bank spots; reference spots are joined to their
    ``n_reference_neighbours`` most similar peers. 4 heterogeneous layers (GraphSAGE + CNDA), CNAP,
    residual, MLP. Loss: MSE + ``pcc_weight`` (1 − PCC) + contrastive terms between complementary masked
    views (``target_mask_ratio``, ``reference_mask_ratio``). AdamW; one slide graph per step; early stopping
    on held-out training slides, which retrieve from the other training slides only.

    In training, a slide never retrieves from itself nor from the validation slides (on a lone training
    slide: from other spatial blocks). At prediction, every training slide is in the bank, except a slide
    of the same name as the one predicted.

    Ablations: ``cnda=False``, ``cnap=False``, ``masking='random'`` or ``'none'``, ``k``, ``n_neighbours``.

    Not in the paper, chosen on validation from training slides where the paper's network failed the
    architecture probes (it kept about 0.55-0.68 of the own-spot signal ridge reaches 0.87 on:
    ``docs/benchmarks.md``): ``residual=True`` adds each heterogeneous layer's input to its output, and
    ``supervised_view='full'`` trains the prediction on the unmasked graph (the masked views feed the
    contrastive terms only; the paper's ``'masked'`` trains it on a fifth of each spot's features);
    ``lr`` 1e-3. ``stpredict.models.spahgc.PAPER_PARAMS`` is the paper's configuration.
    ``linear_path=True`` (not in the paper; off by default) adds a linear map of the spot's features and of
    its graph neighbours' mean to the network's output, started at the ridge fit of the training spots: the
    network then holds ridge_spatial's function (on the architecture probes it keeps the own-spot signal;
    on real slides the validation did not reward it, ``docs/benchmarks.md``).
    """

    Net = SpahgcParams
    # lr: the paper's 1e-4 learns too slowly from a few training slides (docs/models.md); one slide graph per step
    training_defaults = TrainSettings(lr=1e-3, weight_decay=1e-4, max_epochs=200, patience=20)
    fixed_training = ("batch_size",)
    #: the paper's ablations (Tables 4-5) as ``model_params``
    ablations = MappingProxyType(
        {
            "no_cnda": {"cnda": False},
            "no_cnap": {"cnap": False},
            "no_mask": {"masking": "none"},
            "random_mask": {"masking": "random"},
        }
    )

    def graph_specs(self):
        return {"spatial": spot_graph_spec(self.net_params.spot_graph, self.net_params.n_neighbours)}

    def _net(self) -> SpaHGCRegressor:
        return SpaHGCRegressor(self.n_features_, self.n_genes_, self.net_params)

    def _standardised(self, features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net_.scale_in(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()

    def _graph(self, inputs: ModelInputs, spots: np.ndarray, embeddings: np.ndarray, bank, allowed):
        spatial = inputs.graphs["spatial"][spots][:, spots]
        return hetero_graph(
            embeddings[spots],
            spatial,
            bank,
            k=int(self.net_params.k),
            n_reference_neighbours=int(self.net_params.n_reference_neighbours),
            allowed=allowed,
        )

    def _prepare(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        """The training graphs' bank: training spots outside the validation groups (``net_`` scales embeddings)."""
        self._embeddings = self._standardised(inputs.features)
        self._names = _spot_names(inputs)
        library = np.asarray(inputs.library, dtype=str)
        learn = split.train
        self._fit_bank = ReferenceBank(self._embeddings[learn], z[learn], library[learn], self._names[learn])
        self._groups = retrieval_groups(inputs.subset(~split.held), random_state=self.random_state)

    def _items(self, inputs: ModelInputs, spots: np.ndarray, z=None, unit=None, *, stage="predict") -> Items:
        if stage == "train":  # one graph per retrieval group, which never retrieves from itself
            batches, order = [], []
            for group in pd.unique(self._groups):
                members = spots[self._groups == group]
                data, _ = self._graph(inputs, members, self._embeddings, self._fit_bank, allowed=self._groups != group)
                batches.append(with_targets(graph_tensors(data), members, z, unit))
                order.append(members)
            return Items(batches, np.concatenate(order), whole_batches=True)
        if stage == "val":  # held-out training slides retrieve from the other training slides' bank
            graphs = self._slide_graphs(inputs, spots, self._embeddings, self._fit_bank, exclude_own_slide=False)
        else:
            graphs = self.slide_graphs(inputs, spots)
        batches, order, matched, similarity = [], [], [], []
        for members, data, (indices, sims) in graphs:
            batches.append(with_targets(graph_tensors(data), members, z, unit))
            order.append(members)
            matched.append(indices)
            similarity.append(sims)
        items = Items(batches, np.concatenate(order), whole_batches=True)
        if stage == "predict":
            self.last_matches_ = (items.scatter(np.concatenate(matched), spots),
                                  items.scatter(np.concatenate(similarity).astype(np.float32), spots))  # fmt: skip
        return items

    def _finish(self, inputs: ModelInputs, z: np.ndarray, split: Split) -> None:
        # prediction retrieves from every training spot, validation slides included
        self.bank_ = ReferenceBank(self._embeddings, z, np.asarray(inputs.library, dtype=str), self._names)
        del self._embeddings, self._names, self._fit_bank, self._groups

    def _slide_graphs(self, inputs: ModelInputs, spots: np.ndarray, embeddings, bank, *, exclude_own_slide: bool):
        """Per slide among ``spots``: its spots, its ``HeteroData`` against ``bank``, and its matches."""
        library = np.asarray(inputs.library, dtype=str)
        for slide in pd.unique(library[spots]):
            members = spots[library[spots] == slide]
            allowed = bank.slide != slide if exclude_own_slide else None
            data, matches = self._graph(inputs, members, embeddings, bank, allowed=allowed)
            yield members, data, matches

    def slide_graphs(self, inputs: ModelInputs, spots: np.ndarray | None = None):
        """Per slide of ``inputs`` (or of ``spots``): its spots, its ``HeteroData`` against the frozen bank, its matches.

        A slide never retrieves from itself (that would be an in-sample prediction).
        """
        spots = np.arange(inputs.n_spots) if spots is None else spots
        embeddings = self._standardised(inputs.features)
        return self._slide_graphs(inputs, spots, embeddings, self.bank_, exclude_own_slide=True)

    def prediction_annotations(self) -> dict[str, dict]:
        """The ``k`` reference spots each predicted spot retrieved: slide, spot and cosine similarity."""
        if getattr(self, "last_matches_", None) is None:
            return {}
        matched, similarity = self.last_matches_
        k = matched.shape[1]
        columns = {}
        for j in range(k):
            columns[f"slide_{j + 1}"] = pd.Categorical(self.bank_.slide[matched[:, j]])
            columns[f"spot_{j + 1}"] = self.bank_.spot[matched[:, j]]
            columns[f"similarity_{j + 1}"] = similarity[:, j].astype(np.float32)
        return {"obsm": {"references": pd.DataFrame(columns)}}

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        state.update({f"bank.{k}": v for k, v in self.bank_.to_state().items()})
        return state

    def load_state_dict(self, state) -> None:
        self.bank_ = ReferenceBank.from_state({k[5:]: v for k, v in state.items() if k.startswith("bank.")})
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith("bank.")})


def _spot_names(inputs: ModelInputs) -> np.ndarray:
    if inputs.spot_names is not None:
        return np.asarray(inputs.spot_names, dtype=str)
    return np.array([f"{lib}:{i}" for i, lib in enumerate(inputs.library)], dtype=str)
