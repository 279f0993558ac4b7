"""Patches for an encoder from DataLoader workers: slide regions read and cut in parallel, pinned, prefetched.

With ``num_workers=0`` patches are cut in the main process (as before). With workers, each opens the slides
itself (whole-slide images region by region) and cuts its share of the batches while the main process
runs the model, so a GPU does not wait on image decoding; batches arrive in pinned memory when a GPU is used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
from anndata import AnnData

from ._patches import iter_slide_patches, tissue_fraction, warn_background


def patch_batches(
    adata: AnnData, *, num_workers: int = 0, pin_memory: bool = False, **options: Any
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(library_id, positions, uint8 patches)`` batches as :func:`iter_slide_patches` yields them.

    ``options``: ``size``, ``unit``, ``library_key``, ``batch_size``, ``target_mpp``. The order of batches
    differs with workers; positions say where each belongs.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        msg = f"num_workers must be an integer >= 0 (0: cut patches in this process), got {num_workers!r}."
        raise ValueError(msg)
    if num_workers == 0:
        yield from iter_slide_patches(adata, **options)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _dataset(adata, options), batch_size=None, num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=4
    )
    fractions = defaultdict(list)
    for library_id, positions, patches in loader:
        patches = patches.numpy()
        fractions[library_id].append(tissue_fraction(patches))
        yield library_id, np.asarray(positions), patches
    for library_id, values in fractions.items():
        warn_background(library_id, np.concatenate(values))


def _dataset(adata: AnnData, options: dict):
    """An IterableDataset whose workers each cut every ``n``-th batch of patches."""
    import torch
    from torch.utils.data import IterableDataset, get_worker_info

    class PatchBatches(IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            shard = (info.id, info.num_workers) if info is not None else None
            for library_id, positions, patches in iter_slide_patches(adata, shard=shard, **options):
                yield library_id, torch.from_numpy(positions), torch.from_numpy(patches)

    return PatchBatches()
