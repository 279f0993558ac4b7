"""What a model that predicts below the spot offers: expression per bin, whose mean over a spot is the spot.

A sub-spot model predicts, for any square bin of the grid it was trained on (``dense``: bin size and
features), a *spot-equivalent* linear expression: what a spot made only of such bins would measure. The mean
of these values over the bins inside a spot is the model's prediction for the spot (in linear units), so a
super-resolved map averaged back over a spot gives the spot prediction exactly. ``to_target`` brings linear
values to the training target's scale (``log1p`` for a ``log1p`` layer).
"""

from __future__ import annotations

import numpy as np

from .._validate import spatial_entry

#: batch key of the padded bags of sub-spot items: ``(spots, items, features)`` and their mask ``(spots, items)``
BAG_MASK = "bag_mask"


class SubSpotModel:
    """Mixin of models that super-resolve (see :func:`stpredict.tl.super_resolve`).

    Subclasses provide ``dense`` (a :class:`~stpredict.pp._dense.DenseFeatures`) and
    ``bin_linear(features) -> (n_bins, n_genes)``. ``target_scale_`` is the training layer's recorded scale
    (set by ``st.tl.fit`` and on load; ``'log1p'`` means bins are averaged after ``expm1``).
    """

    super_resolves = True
    #: predicts square bins (iStar); a cell-level model (``spot2cell``) predicts segmented nuclei only
    predicts_bins = True
    target_scale_: str | None = None

    @property
    def log_target(self) -> bool:
        return self.target_scale_ == "log1p"

    def to_target(self, linear: np.ndarray) -> np.ndarray:
        """Linear expression -> the training target's scale."""
        return np.log1p(np.maximum(linear, 0.0)) if self.log_target else linear

    def to_linear(self, values: np.ndarray) -> np.ndarray:
        """The training target's scale -> linear expression."""
        return np.maximum(np.expm1(values), 0.0) if self.log_target else values

    def cells_linear(self, cells) -> np.ndarray:
        """Linear values of a tile's nuclei (:class:`~stpredict.pp._cells.TileCells`): their bins' area-weighted mean."""
        return cells.bin_mean(self.bin_linear(cells.bin_features))

    def _linear_in_batches(self, per_item, features: np.ndarray, batch_size: int) -> np.ndarray:
        """``per_item(net, x)`` (a batch of item features -> linear expression) over ``features``, in batches."""
        import torch

        net = self.net_.to(self.device).eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(features), batch_size):
                x = torch.as_tensor(features[start : start + batch_size], dtype=torch.float32, device=self.device)
                out.append(per_item(net, x).float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, self.n_genes_), np.float32)

    # --- training spots as bags of sub-spot items (bins or cells) ----------------------------------------------

    def _bags(self, inputs, spots: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Padded bags ``(spots, items, features)`` of the spots' sub-spot items and their mask ``(spots, items)``."""
        raise NotImplementedError

    def _read_once(self, inputs):
        return self._bags(inputs)

    def _items(self, inputs, spots: np.ndarray, z=None, unit=None, *, stage="predict"):
        from ._data import Key, spot_items

        if stage == "predict":  # bags of just these spots, read now
            bags, mask = self._bags(inputs, spots)
            items = spot_items({Key.X: bags, BAG_MASK: mask}, np.arange(len(spots)))
            items.order = np.asarray(spots)
            return items
        bags, mask = self._fit_read
        return spot_items({Key.X: bags, BAG_MASK: mask}, spots, z, unit)


def pad_bags(members: list[np.ndarray], n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Per spot its items' features ``(k_i, n_features)`` -> padded bags ``(spots, max k, n_features)`` and mask."""
    width = max((len(m) for m in members), default=1)
    bags = np.zeros((len(members), width, n_features), np.float32)
    mask = np.zeros((len(members), width), bool)
    for i, part in enumerate(members):
        bags[i, : len(part)], mask[i, : len(part)] = part, True
    return bags, mask


def super_resolving_models() -> list[str]:
    """Registered models that predict below the spot (for error messages)."""
    from ._base import available_models, get_model

    return [name for name in available_models() if getattr(get_model(name), "super_resolves", False)]


def spot_radius(adata, library_id: str) -> float:
    """Half a spot's diameter in full-resolution pixels (``scalefactors['spot_diameter_fullres']``)."""
    diameter = (spatial_entry(adata, library_id) or {}).get("scalefactors", {}).get("spot_diameter_fullres")
    if not diameter or not np.isfinite(diameter):
        msg = (
            f"Slide {library_id!r} has no scalefactors['spot_diameter_fullres']: a sub-spot model needs each spot's "
            "size to know which bins lie inside it. Read the slide with st.io (the readers record it), or set "
            f"adata.uns['spatial'][{library_id!r}]['scalefactors']['spot_diameter_fullres'] (pixels)."
        )
        raise KeyError(msg)
    return float(diameter) / 2.0
