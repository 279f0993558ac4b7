"""SpaHGC's typed parameters: the one place its defaults and choices are written (model and networks read them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...pp._graph import SpotGraph
from .._params import Params


@dataclass(frozen=True)
class SpahgcParams(Params):
    """The heterogeneous graph (``k`` references, ``n_neighbours``), the network and its masked-view losses."""

    hidden: int = 256
    n_layers: int = 4
    heads: int = 4
    dropout: float = 0.1
    cnda: bool = True
    cnap: bool = True
    residual: bool = True  # not in the paper (PAPER_PARAMS): keeps the spot's own embedding (probes)
    linear_path: bool = False  # not in the paper: a linear map of the spot's and its neighbours' features added
    k: int = 7
    n_neighbours: int = 5
    spot_graph: SpotGraph = "knn"  # not in the paper: 'grid', the array's neighbours
    n_reference_neighbours: int = 3
    masking: Literal["complementary", "random", "none"] = "complementary"
    target_mask_ratio: float = 0.8
    reference_mask_ratio: float = 0.9
    pcc_weight: float = 0.5
    target_contrast_weight: float = 0.2
    reference_contrast_weight: float = 0.1
    supervised_view: Literal["full", "masked"] = "full"  # not in the paper: the prediction reads unmasked features

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("k", "n_neighbours", "n_reference_neighbours"):
            if int(getattr(self, name)) < 1:
                msg = f"{name} must be a positive integer, got {getattr(self, name)!r}."
                raise ValueError(msg)
        if self.hidden % self.heads:
            msg = f"hidden ({self.hidden}) must be divisible by heads ({self.heads})."
            raise ValueError(msg)
        for name in ("target_mask_ratio", "reference_mask_ratio"):
            if not 0 <= getattr(self, name) < 1:
                msg = f"{name} must be in [0, 1), got {getattr(self, name)}."
                raise ValueError(msg)
