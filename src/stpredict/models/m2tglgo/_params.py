"""M2TGLGO's typed parameters: the one place its defaults and choices are written (model and networks read them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...pp._graph import SpotGraph
from .._params import Params

MODALITIES = ("deep", "morphology", "topology")
Activation = Literal["relu", "sigmoid", "none"]


@dataclass(frozen=True)
class M2tglgoParams(Params):
    """The spot graph and its modalities, the GAT, the losses, the GO gene graph and the nuclei patches.

    CPU defaults chosen on a training fold's validation slide (docs/models.md); ``PAPER_PARAMS``: the paper's.
    """

    hidden: tuple[int, ...] = (128, 256)
    gamma: float = 0.75
    dropout: float = 0.5  # on each GAT's input, as the authors' code (DGL feat_drop)
    activation: Activation = "relu"  # of the intra-modal GAT: the authors' code; the paper writes a sigmoid
    output_activation: Activation = "none"  # of H: the authors' code; the paper's sigmoid stalls training
    residual: bool = True  # not in the paper: the intra-modal GATs keep the spot's own features (probes)
    linear_path: bool = False  # not in the paper: a linear map of the spot's and its neighbours' features added
    modalities: tuple[str, ...] = MODALITIES
    n_neighbours: int = 6
    spot_graph: SpotGraph = "knn"  # not in the paper: 'grid', the array's neighbours
    reconstruction_weight: float = 1.0
    ranking_weight: float = 1.0
    margin: float = 0.01
    dense_limit: int = 4096
    go_prior: bool = True
    gene_features: Literal["go", "learned"] = "learned"
    gene_dim: int = 200
    go_namespaces: tuple[str, ...] = ("BP", "MF", "CC")
    go_n_top: int = 10
    go_path: str | None = None
    min_go_coverage: float = 0.5
    patch_size: float = 224
    patch_unit: Literal["px", "um"] = "px"
    nuclei_segmentation: str | None = None  # e.g. 'cellvit': the slides' recorded nuclei (HEST), not the pixels'

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.modalities) - set(MODALITIES))
        if unknown or not self.modalities:
            msg = f"modalities must be a non-empty subset of {list(MODALITIES)}, got {list(self.modalities)!r}."
            raise ValueError(msg)
        if not 0 <= float(self.gamma) <= 1:
            msg = f"gamma must be in [0, 1], got {self.gamma!r}."
            raise ValueError(msg)
