"""Multi-resolution views of spots (a grid of tiles around each spot, TRIPLEX's neighbour view) and a torch ``Dataset`` over spot patches."""

from __future__ import annotations

from collections.abc import Iterator
from os import PathLike
from typing import Any

import numpy as np
from anndata import AnnData

from .._constants import LIBRARY_KEY, derived_key, neighbour_view_key
from .._distributed import map_slides, resolve_client, rows_in_order, slide_parts
from .._files import atomic_path
from .._recipe import FeatureRecipe
from ._features import file_sha256
from ._patches import cut_patches, extract_patches, iter_slide_images, patch_geometry


def neighbour_tiles(
    image, centres: np.ndarray, tile: int, grid: int = 5, out_tile: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``grid x grid`` tiles of ``tile`` px around each centre, and which tiles lie inside the image.

    The region (``grid * tile`` px square) is centred on the spot, so the middle tile is the spot's own
    patch. Tiles are returned row by row (top-left first), resampled to ``out_tile`` px when given. A tile is
    masked (``False``) when it lies entirely outside the image; partly outside tiles are kept and padded
    white. ``image`` may be a :class:`~stpredict.io.WholeSlide`: each spot's region is then read once.

    Returns
    -------
    ``tiles`` of shape ``(n, grid * grid, tile, tile, 3)`` and ``inside`` of shape ``(n, grid * grid)``.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> tiles, inside = st.pp.neighbour_tiles(np.zeros((500, 500, 3), np.uint8), np.array([[250.0, 250.0]]), 100)
    >>> tiles.shape, bool(inside.all())
    ((1, 25, 100, 100, 3), True)
    """
    out_tile = tile if out_tile is None else int(out_tile)
    offsets = (np.arange(grid) - grid // 2) * tile
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    shifts = np.column_stack([dx.ravel(), dy.ravel()])  # (x, y) offsets, row-major over the grid
    tile_centres = (np.rint(centres)[:, None, :] + shifts[None]).reshape(-1, 2)
    if isinstance(image, np.ndarray):
        tiles = cut_patches(image, tile_centres, tile, out_tile)
        tiles = tiles.reshape(len(centres), grid * grid, out_tile, out_tile, -1)
    else:  # one region read per spot, split into its tiles
        # the region's centre, such that it starts where the top-left tile starts (0 for an odd grid)
        shift = (grid * tile) // 2 - (grid // 2) * tile - tile // 2
        regions = cut_patches(image, np.rint(centres) + shift, grid * tile, grid * out_tile)
        tiles = (
            regions.reshape(len(centres), grid, out_tile, grid, out_tile, 3)
            .transpose(0, 1, 3, 2, 4, 5)
            .reshape(len(centres), grid * grid, out_tile, out_tile, 3)
        )
    height, width = image.shape[:2]
    half = tile // 2
    x0, y0 = tile_centres[:, 0] - half, tile_centres[:, 1] - half
    inside = ((x0 + tile > 0) & (x0 < width) & (y0 + tile > 0) & (y0 < height)).reshape(len(centres), grid * grid)
    return tiles, inside


def iter_neighbour_views(
    adata: AnnData,
    *,
    tile_size: float = 224,
    unit: str = "px",
    grid: int = 5,
    batch_size: int = 16,
    library_key: str = LIBRARY_KEY,
    target_mpp: float | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(library_id, spot positions, tiles, inside)`` batches of TRIPLEX neighbour views.

    TRIPLEX cuts a 1120 px region (5 x 5 tiles of 224 px) around every spot and encodes each tile with a
    frozen encoder. One view is 25 patches (3.7 MB at 224 px), so views are produced in small batches,
    one slide image at a time, for the caller to encode.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> lib, positions, tiles, inside = next(st.pp.iter_neighbour_views(adata, batch_size=2))
    >>> tiles.shape, inside.shape
    ((2, 25, 224, 224, 3), (2, 25))
    """
    for library_id, positions, centres, image, scale in iter_slide_images(adata, library_key):
        if scale != 1.0:
            msg = f"Neighbour views need the full-resolution image of slide {library_id!r}."
            raise FileNotFoundError(msg)
        side, out_side = patch_geometry(adata, library_id, tile_size, unit, target_mpp)
        for start in range(0, len(positions), batch_size):
            batch = slice(start, start + batch_size)
            tiles, inside = neighbour_tiles(image, centres[batch], side, grid, out_side)
            yield library_id, positions[batch], tiles, inside


class SpotPatchDataset:
    """Map-style dataset of spot patches (and optional targets) for ``torch.utils.data.DataLoader``.

    Used to train image encoders; it does not import torch until an item is read.

    Patches are cut once, one slide image at a time, into a uint8 array (or a memory-mapped file when
    ``cache_path`` is given, for slides too large for memory); items are ``(patch, target)`` with
    ``patch`` a float tensor ``(3, side, side)`` in [0, 1] after the optional ``transform``.

    Parameters
    ----------
    adata
        Slides with spot centres and images.
    targets
        ``(n_obs, n_genes)`` array of training targets, or ``None`` (items are then patches only).
    size, unit
        Patch side.
    transform
        Callable applied to each patch tensor (e.g. augmentations).
    cache_path
        Optional ``.npy`` file to hold the patches on disk.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> data = st.pp.SpotPatchDataset(adata[:8], size=64)
    >>> len(data), tuple(data[0].shape)
    (8, (3, 64, 64))
    """

    def __init__(
        self,
        adata: AnnData,
        targets: np.ndarray | None = None,
        *,
        size: float = 224,
        unit: str = "px",
        transform=None,
        cache_path: str | PathLike | None = None,
    ) -> None:
        if targets is not None and len(targets) != adata.n_obs:
            msg = f"`targets` has {len(targets)} rows but adata has {adata.n_obs} spots."
            raise ValueError(msg)
        patches = extract_patches(adata, size=size, unit=unit)
        if cache_path is not None:
            with atomic_path(cache_path) as tmp, open(tmp, "wb") as handle:  # never a half-written cache
                np.save(handle, patches)
            patches = np.load(cache_path, mmap_mode="r")
        self.patches = patches
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int):
        import torch

        patch = torch.from_numpy(np.array(self.patches[index], dtype=np.float32) / 255.0).permute(2, 0, 1)
        if self.transform is not None:
            patch = self.transform(patch)
        if self.targets is None:
            return patch
        return patch, torch.from_numpy(self.targets[index])


def neighbour_features(
    adata: AnnData,
    *,
    method: str = "handcrafted",
    tile_size: float = 224,
    unit: str = "px",
    grid: int = 5,
    key_added: str | None = None,
    checkpoint: str | PathLike | None = None,
    pretrained: bool = False,
    device: str = "auto",
    batch_size: int = 8,
    library_key: str = LIBRARY_KEY,
    target_mpp: float | None = None,
    show_progress_bar: bool = True,
    client: Any = None,
    copy: bool = False,
) -> AnnData | None:
    """Encode TRIPLEX's neighbour view: every tile of the ``grid x grid`` region around each spot.

    Tiles are encoded by any :func:`stpredict.pp.image_features` method (a frozen encoder in TRIPLEX).
    Writes ``obsm[key_added]`` with shape ``(n_obs, grid * grid, n_features)`` (tiles row by row, the spot's
    own tile in the middle) and ``obsm[f'{key_added}_mask']`` (``True`` where the tile overlaps the image;
    tiles wholly outside the image are zeros and must be masked by the model).

    Parameters
    ----------
    adata
        Slides with full-resolution images.
    method, checkpoint, pretrained, device
        Tile encoder, as in :func:`stpredict.pp.image_features`.
    tile_size, unit, grid
        Tile side and grid (TRIPLEX: 224 px, 5 x 5, i.e. a 1120 px region).
    key_added
        Defaults to ``f'X_{method}_neighbours'``.
    batch_size
        Spots per batch (each brings ``grid * grid`` tiles).
    target_mpp
        Resample tiles to this pixel size (see :func:`stpredict.pp.image_features`).
    client
        A ``dask.distributed`` client (or ``True`` for the running one): one task per slide, each worker reading
        its slide's image from its path; results identical to serial (see ``docs/distributed.md``).
    library_key, show_progress_bar, copy
        As elsewhere.

    Returns
    -------
    ``None`` or the modified copy.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()[:4].copy()
    >>> st.pp.neighbour_features(adata, tile_size=64, show_progress_bar=False)
    >>> adata.obsm["X_handcrafted_neighbours"].shape
    (4, 25, 44)
    """
    if adata.n_obs == 0:
        msg = "adata has no spots."
        raise ValueError(msg)
    key_added = key_added or neighbour_view_key(method)
    options = {
        "method": method, "tile_size": tile_size, "unit": unit, "grid": grid, "checkpoint": checkpoint,
        "pretrained": pretrained, "device": device, "batch_size": batch_size, "library_key": library_key,
        "target_mpp": target_mpp,
    }  # fmt: skip
    client = resolve_client(client)
    if client is not None:
        features, mask = _neighbour_features_on_cluster(adata, client, options)
    else:
        features, mask = compute_neighbour_features(adata, show_progress_bar=show_progress_bar, **options)
    adata = adata.copy() if copy else adata
    adata.obsm[key_added] = features
    adata.obsm[derived_key(key_added, "mask")] = mask
    FeatureRecipe(
        method, size=tile_size, unit=unit, grid=grid, target_mpp=target_mpp, pretrained=pretrained,
        checkpoint_sha256=file_sha256(checkpoint) if checkpoint is not None else None, checkpoint=checkpoint,
    ).store(adata, key_added)  # fmt: skip
    return adata if copy else None


def compute_neighbour_features(
    adata: AnnData,
    *,
    method: str,
    tile_size: float,
    unit: str,
    grid: int,
    checkpoint: str | PathLike | None,
    pretrained: bool,
    device: str,
    batch_size: int,
    library_key: str,
    target_mpp: float | None,
    show_progress_bar: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(features, inside)`` arrays of :func:`neighbour_features`, without writing them."""
    from tqdm.auto import tqdm

    from ._features import _extractor, _microns_per_pixel

    extract, _, _ = _extractor(method, checkpoint, pretrained, device)
    features = mask = None
    views = iter_neighbour_views(
        adata,
        tile_size=tile_size,
        unit=unit,
        grid=grid,
        batch_size=batch_size,
        library_key=library_key,
        target_mpp=target_mpp,
    )
    with tqdm(total=adata.n_obs, desc=f"neighbour views ({method})", disable=not show_progress_bar) as bar:
        for library_id, positions, tiles, inside in views:
            flat = tiles.reshape(-1, *tiles.shape[2:])
            mpp = target_mpp if target_mpp is not None else _microns_per_pixel(adata, library_id, method)
            values = extract(flat, mpp, None)
            values = values.reshape(len(positions), grid * grid, -1) * inside[..., None]
            if features is None:
                features = np.zeros((adata.n_obs, grid * grid, values.shape[2]), dtype=np.float32)
                mask = np.zeros((adata.n_obs, grid * grid), dtype=bool)
            features[positions], mask[positions] = values, inside
            bar.update(len(positions))
    return features, mask


def _neighbour_features_on_cluster(adata: AnnData, client, options: dict) -> tuple[np.ndarray, np.ndarray]:
    """One task per slide on a dask.distributed cluster (workers read their slide's image); rows in ``adata``'s order."""
    parts = slide_parts(adata, library_key=options["library_key"])
    results = map_slides(client, compute_neighbour_features, parts, **options)
    features = rows_in_order(adata.n_obs, parts, [values for values, _ in results])
    return features, rows_in_order(adata.n_obs, parts, [inside for _, inside in results])
