"""The data layer of the neural models: typed batch keys, one item builder per layout, one scatter back.

A network reads *items*: batches of spots (``spot_items``: a dataset of rows, batched by the loader) or
whole slides (``slide_items``: one dict per slide, e.g. a graph). :class:`Items` carries them with the spot
each predicted row belongs to, so that predictions go back to spot order in one place (:meth:`Items.scatter`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._inputs import ModelInputs
from ._train import TensorDictDataset, single_item


class Key(StrEnum):
    """Keys of the batch dicts that the training loop (``_train.py``) and the modules share.

    A ``StrEnum``: ``batch[Key.X]`` and ``batch["x"]`` are the same entry, so a misspelt key is a name error
    in the code that builds or reads a batch, not a ``KeyError`` deep inside a training epoch.
    """

    X = "x"  # the image representation of each spot (or each node of a slide graph)
    Y = "y"  # z-scored targets (training and validation only)
    UNIT = "unit"  # the scoring unit of each row (slide or spatial block): validation Pearson within it
    MASK = "mask"  # rows that count in the loss and the score (others are context)
    EDGE_INDEX = "edge_index"  # (2, n_edges) graph edges, local node indices
    PIXELS = "pixels"  # (n, 3, s, s) standardised patches, for models that learn from pixels
    INDEX = "index"  # positions of a batch's spots within the slide-level tensors it carries


def unit_codes(unit: np.ndarray) -> np.ndarray:
    """Integer codes of scoring units (slide or spatial-block names), for tensors."""
    return np.unique(unit, return_inverse=True)[1]


@dataclass
class Items:
    """What a network reads of some spots, and which spot each of its output rows is.

    Attributes
    ----------
    batches
        A ``Dataset`` of rows (batched by the loader) or a list of whole batches (``whole_batches``).
    order
        For every output row, in the order the network returns rows, the index of its spot in the inputs.
    whole_batches
        Items are complete batches (a slide's graph, a slide's spots): the loader passes them one by one.
    collate
        A function assembling a batch from a list of items (e.g. spot indices -> their local graphs), for
        items that are neither rows nor whole batches.
    """

    batches: Any
    order: np.ndarray
    whole_batches: bool = False
    collate: Callable | None = None

    @property
    def collate_fn(self) -> Callable | None:
        if self.collate is not None:
            return self.collate
        return single_item if self.whole_batches else None

    def scatter(self, rows: np.ndarray, spots: np.ndarray) -> np.ndarray:
        """Output ``rows`` (in item order) placed in the order of ``spots`` (sorted spot indices they cover)."""
        out = np.empty((len(spots), *rows.shape[1:]), dtype=rows.dtype)
        out[np.searchsorted(spots, self.order)] = rows
        return out


def with_targets(item: dict, spots: np.ndarray, z: np.ndarray | None, unit: np.ndarray | None) -> dict:
    """``item`` with the spots' targets and scoring-unit codes when fitting (``z`` given)."""
    if z is not None:
        item[Key.Y] = torch.from_numpy(z[spots].astype(np.float32))
        item[Key.UNIT] = torch.from_numpy(unit[spots])
    return item


def spot_items(
    fields: Mapping[str, np.ndarray | torch.Tensor],
    spots: np.ndarray,
    z: np.ndarray | None = None,
    unit: np.ndarray | None = None,
) -> Items:
    """One row per spot: ``fields`` (arrays over all spots of the inputs) taken at ``spots``."""
    tensors = {
        k: (v if torch.is_tensor(v) else torch.from_numpy(np.ascontiguousarray(v)))[spots] for k, v in fields.items()
    }
    return Items(TensorDictDataset(**with_targets(tensors, spots, z, unit)), np.asarray(spots))


def slide_items(
    inputs: ModelInputs,
    spots: np.ndarray,
    build: Callable[[np.ndarray], dict],
    z: np.ndarray | None = None,
    unit: np.ndarray | None = None,
) -> Items:
    """One whole batch per slide: ``build(slide_spots)`` for the ``spots`` of each slide, in slide order."""
    library = np.asarray(inputs.library)[spots]
    batches, order = [], []
    for slide in pd.unique(library):
        members = spots[library == slide]
        batches.append(with_targets(build(members), members, z, unit))
        order.append(members)
    return Items(batches, np.concatenate(order) if order else np.empty(0, np.int64), whole_batches=True)


def covers_whole_slides(inputs: ModelInputs, spots: np.ndarray) -> bool:
    """Whether ``spots`` holds every spot of each slide it touches (else graphs must be built for the part)."""
    chosen = np.zeros(inputs.n_spots, dtype=bool)
    chosen[spots] = True
    touched = np.isin(inputs.library, np.asarray(inputs.library)[spots])
    return bool(chosen[touched].all())


def concatenate_items(parts: Sequence[Items]) -> Items:
    """Items of several parts (each whole batches) as one."""
    return Items([b for p in parts for b in p.batches], np.concatenate([p.order for p in parts]), whole_batches=True)
