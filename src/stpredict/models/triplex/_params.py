"""TRIPLEX's typed parameters: the one place its defaults and choices are written (model and networks read them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._params import Params

VIEWS = ("target", "neighbour", "global")


def check_views(views) -> tuple[str, ...]:
    """``views`` as a tuple in TRIPLEX's order; an error names the accepted ones."""
    chosen = tuple(v for v in VIEWS if v in set(views))
    unknown = sorted(set(views) - set(VIEWS))
    if unknown or not chosen:
        msg = f"views must be a non-empty subset of {list(VIEWS)}, got {list(views)}."
        raise ValueError(msg)
    return chosen


@dataclass(frozen=True)
class TriplexParams(Params):
    """The three views (their inputs and encoders), the fusion and its loss."""

    dim: int = 128
    heads: int = 4
    depth_target: int = 1
    depth_neighbour: int = 1
    depth_global: int = 2
    depth_fusion: int = 1
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    alpha: float = 0.3
    target_input_size: int = 64
    freeze_target_cnn: bool = True
    target_checkpoint: str | None = None
    target_pretrain_epochs: int = 15
    target_pretrain_lr: float = 1e-3
    patch_size: float = 224
    patch_unit: Literal["px", "um"] = "px"
    tile_method: str = "handcrafted"
    tile_size: float = 224
    tile_unit: Literal["px", "um"] = "px"
    grid: int = 5
    views: tuple[str, ...] = VIEWS
    position_encoding: Literal["apeg", "peg", "none"] = "apeg"
    fusion: Literal["cross_attention", "sum", "concat"] = "cross_attention"
    fusion_loss: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "views", check_views(self.views))  # in TRIPLEX's order
        if self.target_checkpoint is not None and "target" not in self.views:
            msg = "target_checkpoint= initialises the target view, which views= leaves out; add 'target' to views."
            raise ValueError(msg)
