"""Patches a data set ships with its spots (HEST-1k's ``patches/<id>.h5``), read by spot instead of cut from the WSI.

HEST-1k stores, per sample, one patch per spot centred on it and resampled to a fixed pixel size (224 px at
0.5 µm/px: 112 µm of tissue), in an HDF5 file with ``img`` (n, s, s, 3) uint8, ``coords`` (top-left corners in
WSI pixels) and ``barcode`` (the spot's name in ``st/<id>.h5ad``). A reader records such a file in the slide's
``uns['spatial'][library_id]['metadata']['stored_patches']``; :func:`stpredict.pp.image_features` and every
patch reader then take a spot's patch from it whenever the request fits inside it without upsampling (the same
or less tissue, at the same or a coarser pixel size), so that a sample can be used without decoding its WSI, or
without its WSI at all.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ._resize import resize_patches

#: where a reader records a slide's stored patches (in ``uns['spatial'][library_id]['metadata']``)
STORED_PATCHES_KEY = "stored_patches"
#: a request may ask for a pixel size this much finer than the stored one and still be served (rounding)
MPP_SLACK = 0.02


def patch_file_record(path: str | PathLike, mpp: float, barcode_key: str) -> dict[str, Any]:
    """What a reader stores for a patch file: its path, pixel size, patch side and where spot barcodes live."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as handle:
        for key in ("img", "barcode"):
            if key not in handle:
                msg = f"Patch file {str(path)!r} has no {key!r} dataset (HEST's layout: img, coords, barcode)."
                raise KeyError(msg)
        shape = handle["img"].shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] < 3:
        msg = f"Patch file {str(path)!r}: img has shape {shape}; expected (n, side, side, 3)."
        raise ValueError(msg)
    return {"path": str(path.resolve()), "mpp": float(mpp), "side": int(shape[1]), "barcode_key": barcode_key}


def can_serve(record: dict[str, Any], physical_um: float, out_side: int) -> bool:
    """Whether stored patches hold a ``physical_um``-wide patch at ``out_side`` px without upsampling."""
    stored_um = record["side"] * record["mpp"]
    return physical_um <= stored_um * (1 + 1e-6) and physical_um / out_side >= record["mpp"] * (1 - MPP_SLACK)


class StoredPatches:
    """An open patch file: :meth:`read` returns the patches of given barcodes, cropped and resampled."""

    def __init__(self, record: dict[str, Any]) -> None:
        import h5py

        self.record = record
        self.handle = h5py.File(record["path"], "r")
        names = np.asarray(self.handle["barcode"][:]).reshape(-1)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        self.rows = {name: row for row, name in enumerate(names)}

    def __enter__(self) -> StoredPatches:
        return self

    def __exit__(self, *_: object) -> None:
        self.handle.close()

    def missing(self, barcodes: np.ndarray) -> list[str]:
        return [str(b) for b in barcodes if str(b) not in self.rows]

    def read(self, barcodes: np.ndarray, physical_um: float, out_side: int) -> np.ndarray:
        """The spots' patches covering ``physical_um`` around the centre, at ``out_side`` px (uint8, RGB)."""
        rows = np.array([self.rows[str(b)] for b in barcodes], dtype=np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)  # h5py reads increasing indices only
        patches = np.asarray(self.handle["img"][unique])[inverse][..., :3]
        crop = int(round(physical_um / self.record["mpp"]))
        if crop < self.record["side"] - 1:  # the centre of the stored patch (within a pixel: the whole patch)
            start = self.record["side"] // 2 - crop // 2
            patches = patches[:, start : start + crop, start : start + crop]
        return resize_patches(np.ascontiguousarray(patches), out_side)
