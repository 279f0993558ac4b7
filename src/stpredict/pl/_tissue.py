"""The tissue mask and virtual spots of a whole-slide image over its overview."""

from __future__ import annotations

from os import PathLike

import matplotlib.pyplot as plt
from anndata import AnnData
from matplotlib.axes import Axes

from .._validate import library_ids, spatial_entry
from ._spatial import _finish, slide_view


def tissue(
    adata: AnnData,
    *,
    library_id: str | None = None,
    show_spots: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | PathLike | None = None,
) -> Axes | None:
    """The detected tissue (outlined) over a slide's overview, with its (virtual) spots.

    Use it to check :func:`stpredict.io.read_wsi`'s tissue detection before predicting: glass, pen marks and
    debris should stay outside the outline.

    Parameters
    ----------
    adata
        Slides from :func:`stpredict.io.read_wsi` (``uns['spatial'][library_id]['tissue_mask']``).
    library_id
        Slide to show (default: the first).
    show_spots
        Draw the spots (their true diameter) on top.
    ax, show, save
        As in scanpy: draw on ``ax``; show unless ``save`` is given; ``show=False`` returns the Axes.

    Returns
    -------
    The Axes, when ``show=False``.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> image = np.full((2000, 2000, 3), 240, np.uint8)
    >>> image[400:1600, 500:1500] = (190, 110, 170)
    >>> slide = st.io.read_wsi(st.io.write_pyramidal_tiff(image, "tissue.tif", mpp=0.5))
    >>> ax = st.pl.tissue(slide, show=False)
    >>> ax.get_title()
    'tissue: 30% of the overview, 35 spots'
    """
    library_id = library_id or library_ids(adata)[0]
    slide = spatial_entry(adata, library_id) or {}
    mask = slide.get("tissue_mask")
    if mask is None:
        msg = (
            f"Slide {library_id!r} has no uns['spatial'][{library_id!r}]['tissue_mask']: read it with "
            "st.io.read_wsi, which detects the tissue."
        )
        raise KeyError(msg)
    view = slide_view(adata, library_id)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5 * mask.shape[0] / mask.shape[1]), constrained_layout=True)
    if view.image is not None:
        ax.imshow(view.image)
    ax.contour(mask.astype(float), levels=[0.5], colors="limegreen", linewidths=1.0)
    n_spots = int(view.mask.sum())
    if show_spots:
        ax.scatter(
            view.xy[:, 0],
            view.xy[:, 1],
            s=view.spot_size,
            marker=view.marker,
            facecolors="none",
            edgecolors="black",
            linewidths=0.3,
        )
    ax.set_xlim(0, mask.shape[1])
    ax.set_ylim(mask.shape[0], 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"tissue: {mask.mean():.0%} of the overview, {n_spots} spots", fontsize=9)
    if show_spots:
        view.fit_spots(ax)
    return _finish(ax, show, save)
